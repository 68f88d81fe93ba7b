"""What /admin status shows: the queue, the last hour, each engine, recent failures, and a
24-hour chart of queue depth and throughput, all from the database and the engines.

The chart is a bare matplotlib Figure on its own Agg canvas (no pyplot, no
global state), drawn in a worker thread so the event loop never waits on it.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from dataclasses import dataclass

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from engine.protocol import Status

from ..jobs.engine_client import EngineProcess
from ..store.models import JobState, Lane
from .facts import Failure, HourPoint, HourSummary, OpsQueries
from .metrics import gpu_memory

WIDTH_PX, HEIGHT_PX, DPI = 800, 360, 96
GIB = 2**30


@dataclass(frozen=True)
class EngineFacts:
    device: str
    status: Status | None
    restarts: int
    exit_code: int | None

    def describe(self) -> str:
        status = self.status
        if status is None:
            state = "not started yet" if self.exit_code is None else (
                f"not running (exited with code {self.exit_code}; restarts with the next job)"
            )  # fmt: skip
            return f"{state}; restarts: {self.restarts}"
        memory = gpu_memory(status)
        parts = []
        if memory is not None:
            used, free = memory
            parts.append(f"memory {used / GIB:.1f} GiB used, {free / GIB:.1f} GiB free")
        if status.gpu_utilization is not None:
            parts.append(f"utilisation {status.gpu_utilization:.0f}%")
        models = ", ".join(
            f"{m.name} ({m.family}, {m.memory_bytes / GIB:.2f} GiB)" for m in status.loaded
        )
        parts.append(f"models: {models or 'none loaded'}")
        running = ", ".join(f"`{job}`" for job in status.running_jobs)
        parts.append(f"running: {running}" if running else "idle")
        parts.append(f"restarts: {self.restarts}")
        return "; ".join(parts)


@dataclass(frozen=True)
class StatusFacts:
    queue: dict[Lane, int]
    running: int
    hour: HourSummary
    engines: list[EngineFacts]
    failures: list[Failure]
    hourly: list[HourPoint]


class StatusReport:
    def __init__(self, queries: OpsQueries, engines: Sequence[EngineProcess]) -> None:
        self._queries = queries
        self._engines = list(engines)

    async def facts(self) -> StatusFacts:
        statuses = await asyncio.gather(*(engine.status() for engine in self._engines))
        states = await self._queries.jobs_by_state()
        return StatusFacts(
            queue=await self._queries.queue_depth(),
            running=states[JobState.RUNNING],
            hour=await self._queries.hour_summary(),
            engines=[
                EngineFacts(engine.device, status, max(0, engine.starts - 1), engine.exit_code)
                for engine, status in zip(self._engines, statuses, strict=True)
            ],
            failures=await self._queries.last_failures(5),
            hourly=await self._queries.hourly(24),
        )

    async def chart(self, points: Sequence[HourPoint]) -> bytes:
        return await asyncio.to_thread(hourly_chart_png, points)


def hourly_chart_png(points: Sequence[HourPoint]) -> bytes:
    """Queue depth (bars) and images made (line) per hour of the last 24 hours."""
    figure = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    depth_axis = figure.add_subplot()
    labels = [point.start.strftime("%H:00") for point in points]
    depth_axis.bar(labels, [p.queue_depth for p in points], color="#a0cbe8",
                   label="queue depth (at the hour)")  # fmt: skip
    depth_axis.set_ylabel("jobs waiting")
    depth_axis.set_title("Last 24 hours (UTC)")
    images_axis = depth_axis.twinx()
    images_axis.plot(labels, [p.images for p in points], color="#f28e2b", marker="o",
                     markersize=3, label="images per hour")  # fmt: skip
    images_axis.plot(labels, [p.finished for p in points], color="#4e79a7", linestyle="--",
                     label="jobs finished per hour")  # fmt: skip
    images_axis.set_ylabel("per hour")
    images_axis.set_ylim(bottom=0)
    depth_axis.set_ylim(bottom=0)
    depth_axis.tick_params(axis="x", labelrotation=60, labelsize=7)
    handles = depth_axis.get_legend_handles_labels()[0] + images_axis.get_legend_handles_labels()[0]
    depth_axis.legend(handles=handles, loc="upper left", fontsize=8)
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()
