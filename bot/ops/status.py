"""What /admin status shows: the queue, the last hour, each engine, recent failures, and a
24-hour chart of queue depth and throughput, all from the database and the engines.

The chart (bot.ops.chart) is drawn in a worker thread so the event loop never
waits on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from engine.protocol import Status

from ..jobs.engine_client import EngineProcess
from ..store.models import JobState, Lane
from .facts import Failure, HourPoint, HourSummary, OpsQueries
from .metrics import gpu_memory

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
            state = (
                "not started yet"
                if self.exit_code is None
                else (
                    f"not running (exited with code {self.exit_code}; restarts with the next job)"
                )
            )
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
        # matplotlib weighs ~30 MB at start: loaded when an admin first asks for
        # /admin status, not by every bot (bench, item bot).
        from .chart import hourly_chart_png

        return await asyncio.to_thread(hourly_chart_png, points)
