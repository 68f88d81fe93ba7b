"""A PNG chart of daily usage, drawn with matplotlib's Agg canvas.

A bare Figure with its own Agg canvas, never pyplot: pyplot keeps global
state and a GUI backend choice, neither of which belongs in a bot.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .usage import DayUsage

WIDTH_PX, HEIGHT_PX, DPI = 960, 480, 96


def blank_figure(width_px: int, height_px: int) -> Figure:
    """A bare Figure of this size on its own Agg canvas."""
    figure = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def twin_axes_png(figure: Figure, left: Axes, right: Axes) -> bytes:
    """The figure as PNG bytes, with one legend for the series of both y axes."""
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    left.legend(handles=handles, loc="upper left", fontsize=8)
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()


def daily_usage_png(days: Sequence[DayUsage], title: str) -> bytes:
    """GPU minutes per day (normal and relax lanes stacked) and images per day."""
    figure = blank_figure(WIDTH_PX, HEIGHT_PX)
    gpu_axis = figure.add_subplot()
    labels = [day.day.strftime("%b %d") for day in days]
    normal = [(day.gpu_seconds - day.relax_gpu_seconds) / 60 for day in days]
    relax = [day.relax_gpu_seconds / 60 for day in days]
    gpu_axis.bar(labels, normal, label="GPU minutes", color="#4e79a7")
    gpu_axis.bar(labels, relax, bottom=normal, label="GPU minutes (relax)", color="#a0cbe8")
    gpu_axis.set_ylabel("GPU minutes")
    gpu_axis.set_title(title)
    images_axis = gpu_axis.twinx()
    images_axis.plot(
        labels, [day.images for day in days], color="#f28e2b", marker="o", label="images"
    )
    images_axis.set_ylabel("images")
    images_axis.set_ylim(bottom=0)
    gpu_axis.tick_params(axis="x", labelrotation=45, labelsize=8)
    return twin_axes_png(figure, gpu_axis, images_axis)
