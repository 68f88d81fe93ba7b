"""/admin status's chart: queue depth and throughput per hour, drawn with matplotlib's
Agg canvas (a bare Figure, never pyplot), imported only when an admin asks for it."""

from __future__ import annotations

from collections.abc import Sequence

from ..reports.chart import blank_figure, twin_axes_png
from .facts import HourPoint

WIDTH_PX, HEIGHT_PX = 800, 360


def hourly_chart_png(points: Sequence[HourPoint]) -> bytes:
    """Queue depth (bars) and images made (line) per hour of the last 24 hours."""
    figure = blank_figure(WIDTH_PX, HEIGHT_PX)
    depth_axis = figure.add_subplot()
    labels = [point.start.strftime("%H:00") for point in points]
    depth_axis.bar(
        labels, [p.queue_depth for p in points], color="#a0cbe8", label="queue depth (at the hour)"
    )
    depth_axis.set_ylabel("jobs waiting")
    depth_axis.set_title("Last 24 hours (UTC)")
    images_axis = depth_axis.twinx()
    images_axis.plot(
        labels,
        [p.images for p in points],
        color="#f28e2b",
        marker="o",
        markersize=3,
        label="images per hour",
    )
    images_axis.plot(
        labels,
        [p.finished for p in points],
        color="#4e79a7",
        linestyle="--",
        label="jobs finished per hour",
    )
    images_axis.set_ylabel("per hour")
    images_axis.set_ylim(bottom=0)
    depth_axis.set_ylim(bottom=0)
    depth_axis.tick_params(axis="x", labelrotation=60, labelsize=7)
    return twin_axes_png(figure, depth_axis, images_axis)
