"""The listener fan-out: who hears about jobs (Discord, the HTTP API, the CLI) and who waits
for one job's end; intake registers them, the worker pool and intake both tell them.

JobEvents is the in-process implementation (SQLite: one process runs the front doors and
the engines, so every event happens where it is heard). bot.jobs.relay.SharedEvents is
the same interface across processes (PostgreSQL): events told here also go to the rows
and notifications that front doors in other processes follow, and theirs come back here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from engine.protocol import Progress

from ..store.models import Job


class JobListener(Protocol):
    """What a front end (Discord, CLI) hears about jobs; each call must return at once."""

    def job_started(self, job: Job) -> None: ...

    def job_progress(self, job_id: str, progress: Progress) -> None:
        """`progress.preview`: the engine's file (an absolute path) for a job running in
        this process, a blob key for one running in another (bot.jobs.relay)."""
        ...

    def job_finished(self, job: Job) -> None: ...


class JobEvents:
    """Tells every listener, synchronously: a slow or failing listener's work is its own
    task, so telling it never slows or fails a GPU job."""

    def __init__(self) -> None:
        self._listeners: list[JobListener] = []
        # Whoever waits for a job's end (a cancel that says what came of it), by job id.
        self._endings: dict[str, list[asyncio.Future[Job]]] = {}

    def add(self, listener: JobListener) -> None:
        self._listeners.append(listener)

    def start(self) -> None:
        """In one process there is nothing to follow: every event is told as it happens."""

    async def stop(self) -> None:
        """Nothing was started (see `start`)."""

    def catch_up_with(self, hook: Callable[[], Awaitable[None]]) -> None:
        """`hook` would look for what a lost connection to other processes missed; one
        process misses nothing, so it is not kept."""

    def ending(self, job_id: str) -> asyncio.Future[Job]:
        """A future resolved with the job as it ends; `forget` it once done waiting."""
        ending: asyncio.Future[Job] = asyncio.get_running_loop().create_future()
        self._endings.setdefault(job_id, []).append(ending)
        return ending

    def forget(self, job_id: str, ending: asyncio.Future[Job]) -> None:
        waiting = self._endings.get(job_id, [])
        if ending in waiting:
            waiting.remove(ending)
        if not waiting:
            self._endings.pop(job_id, None)

    def started(self, job: Job) -> None:
        for listener in self._listeners:
            listener.job_started(job)

    def progress(self, progress: Progress) -> None:
        for listener in self._listeners:
            listener.job_progress(progress.job_id, progress)

    def finished(self, job: Job) -> None:
        for ending in self._endings.pop(job.id, []):
            if not ending.done():
                ending.set_result(job)
        for listener in self._listeners:
            listener.job_finished(job)
