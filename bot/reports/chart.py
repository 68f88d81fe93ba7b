"""A PNG chart of daily usage, drawn with matplotlib's Agg canvas.

A bare Figure with its own Agg canvas, never pyplot: pyplot keeps global
state and a GUI backend choice, neither of which belongs in a bot.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .usage import DayUsage

WIDTH_PX, HEIGHT_PX, DPI = 960, 480, 96


def daily_usage_png(days: Sequence[DayUsage], title: str) -> bytes:
    """GPU minutes per day (normal and relax lanes stacked) and images per day."""
    figure = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    gpu_axis = figure.add_subplot()
    labels = [day.day.strftime("%b %d") for day in days]
    normal = [(day.gpu_seconds - day.relax_gpu_seconds) / 60 for day in days]
    relax = [day.relax_gpu_seconds / 60 for day in days]
    gpu_axis.bar(labels, normal, label="GPU minutes", color="#4e79a7")
    gpu_axis.bar(labels, relax, bottom=normal, label="GPU minutes (relax)", color="#a0cbe8")
    gpu_axis.set_ylabel("GPU minutes")
    gpu_axis.set_title(title)
    images_axis = gpu_axis.twinx()
    images_axis.plot(labels, [day.images for day in days], color="#f28e2b", marker="o",
                     label="images")  # fmt: skip
    images_axis.set_ylabel("images")
    images_axis.set_ylim(bottom=0)
    gpu_axis.tick_params(axis="x", labelrotation=45, labelsize=8)
    handles = gpu_axis.get_legend_handles_labels()[0] + images_axis.get_legend_handles_labels()[0]
    gpu_axis.legend(handles=handles, loc="upper left", fontsize=8)
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()
