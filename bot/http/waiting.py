"""Waiting for a job's end: the JobWatch that wakes waiting requests, and the
synchronous requests' jobs, cancelled when their client goes away or the API stops.

A synchronous request waits on a JobListener (a future per job), never by polling. If
its client goes away, aiohttp cancels the handler and the job is cancelled, which
refunds its reservation; a request cut off by a stop is cancelled at the next start.
It waits at most `[http] wait_seconds`: then it is answered with the job's id to poll,
and the job, no longer its connection's, goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from engine.protocol import Progress

from ..core.views import Job
from ..jobs.service import JobService, Submitted
from .services import CLIENT

# The door's lines keep the logger name they had before the door was split up.
log = logging.getLogger("bot.http.server")


class JobWatch:
    """The JobListener of the HTTP API: wakes requests waiting for their job, and keeps the
    progress of running HTTP jobs for `GET /v1/jobs/{id}`. Every call returns at once."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[asyncio.Future[Job]]] = {}
        self._progress: dict[str, Progress | None] = {}

    def job_started(self, job: Job) -> None:
        if job.client == CLIENT:
            self._progress[job.id] = None

    def job_progress(self, job_id: str, progress: Progress) -> None:
        if job_id in self._progress:
            self._progress[job_id] = progress

    def job_finished(self, job: Job) -> None:
        self._progress.pop(job.id, None)
        for future in self._waiting.pop(job.id, []):
            if not future.done():
                future.set_result(job)

    def expect(self, job_id: str) -> asyncio.Future[Job]:
        """A future the job's end resolves (register it before reading the job's state)."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(job_id, []).append(future)
        return future

    def forget(self, job_id: str, future: asyncio.Future[Job]) -> None:
        waiting = self._waiting.get(job_id, [])
        if future in waiting:
            waiting.remove(future)
        if not waiting:
            self._waiting.pop(job_id, None)

    def progress(self, job_id: str) -> Progress | None:
        return self._progress.get(job_id)


@dataclass(frozen=True)
class StillRunning:
    """A waited-for job that had not ended after the wait: its client polls it."""

    job: Job


class SynchronousJobs:
    """The jobs whose request waits for their end on its connection. Owned by HttpApi:
    `cancel_orphans` at its start, `stop` at its stop."""

    def __init__(self, jobs: JobService, watch: JobWatch, wait_seconds: float) -> None:
        self._jobs = jobs
        self.watch = watch
        self._wait_seconds = wait_seconds
        self._tasks: set[asyncio.Task[None]] = set()
        # Jobs whose synchronous request is waiting for them right now.
        self._awaited: set[str] = set()
        # Set by `stop`: a job it cuts off is the bot's doing, refunded in full.
        self._stopping = False

    async def run(self, submission: Awaitable[Submitted]) -> Job | StillRunning:
        """Queue the job (`submission`) and wait for its end, or StillRunning after
        `wait_seconds`. A client that leaves while the job is being queued must not
        leave it behind: the submission goes on, shielded, and its job is cancelled once
        it is in."""
        queued = asyncio.ensure_future(submission)
        try:
            submitted = await asyncio.shield(queued)
        except asyncio.CancelledError:
            self._spawn(self._abandon_submission(queued), "abandon-submission")
            raise
        job_id = submitted.job.id
        self._awaited.add(job_id)
        try:
            async with asyncio.timeout(self._wait_seconds):
                job = await self._finished(job_id)
        except asyncio.CancelledError:
            self._cut_off(job_id)
            raise
        except TimeoutError:
            self._awaited.discard(job_id)
            await self._jobs.store.stop_waiting(job_id, self._wait_seconds)
            log.info("job %s: not done after %g s; its client polls it", job_id, self._wait_seconds)
            return StillRunning(await self._jobs.store.get(job_id))
        except BaseException:
            self._awaited.discard(job_id)
            raise
        self._awaited.discard(job_id)
        return job

    async def _finished(self, job_id: str) -> Job:
        """The job once it ended. The waiter is registered before the state is read, so an
        end between the two cannot be missed."""
        future = self.watch.expect(job_id)
        try:
            job = await self._jobs.store.get(job_id)
            if job.state.finished:
                return job
            return await future
        finally:
            self.watch.forget(job_id, future)

    def _cut_off(self, job_id: str) -> None:
        """The client went away (or the server stops): nobody will read the answer, so the
        job is cancelled, unless `stop` did it already. A client that left pays for the
        GPU time its job used, as a member's cancel does; a stop refunds it in full."""
        if job_id in self._awaited:
            self._awaited.discard(job_id)
            self._spawn(self._abandon(job_id), f"abandon-{job_id}")

    async def _abandon(self, job_id: str) -> None:
        if await self._jobs.cancel(job_id, None, refund=self._stopping):
            cause = "the API stopped" if self._stopping else "its HTTP client went away"
            log.info("job %s: %s; cancelled", job_id, cause)

    async def _abandon_submission(self, submission: asyncio.Future[Submitted]) -> None:
        try:
            submitted = await submission
        except Exception:
            return  # refused: nothing was queued
        await self._abandon(submitted.job.id)

    async def cancel_orphans(self) -> None:
        """Cancel the jobs of synchronous requests a stop cut off."""
        for job in await self._jobs.store.unfinished():
            if job.synchronous:
                await self._abandon(job.id)

    async def stop(self, server: web.AppRunner | None) -> None:
        """Stop `server`, whose waiting requests have its shutdown timeout to get their
        answer; the jobs of those cut off are cancelled and refunded in full."""
        self._stopping = True
        if server is not None:
            await server.cleanup()
        # aiohttp cancels cut-off handlers without waiting for them: their jobs are
        # cancelled here, whichever of the two comes first (see _cut_off).
        for job_id in list(self._awaited):
            self._awaited.discard(job_id)
            await self._abandon(job_id)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


SYNCHRONOUS = web.AppKey("synchronous", SynchronousJobs)
