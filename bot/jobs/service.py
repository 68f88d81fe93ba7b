"""The job service: takes specs in, runs them on the engines, reports back.

Discord is one client of this service and the `atelier generate` CLI another;
neither knows how jobs are stored or run. A job is written to the database
before its submitter hears it is queued, and unfinished jobs are put back in
the queue when the service starts, so nothing is lost across a restart.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from engine.protocol import ErrorCode, JobError, ModelSpec, Progress, Status

from ..store.jobs import JobStore, NewOutput, Requester
from ..store.models import Job, JobState, Lane
from ..store.quotas import QuotaStore
from .engine_client import EngineFailure, EngineProcess, ProgressRelay
from .queue import JobQueue
from .spec import JobSpec

log = logging.getLogger(__name__)


class JobListener(Protocol):
    """What a front end (Discord, CLI) hears about the jobs it submitted."""

    async def job_started(self, job: Job) -> None: ...

    async def job_progress(self, job_id: str, progress: Progress) -> None: ...

    async def job_finished(self, job: Job) -> None: ...


@dataclass(frozen=True)
class Submitted:
    job: Job
    queue_position: int
    lane: Lane = Lane.NORMAL  # relax: over quota, runs when no in-quota job waits


def new_job_id() -> str:
    return secrets.token_hex(5)


class JobService:
    def __init__(
        self,
        store: JobStore,
        data_dir: Path,
        engines: list[EngineProcess],
        job_timeout: float,
        models: dict[str, ModelSpec],
        default_model: str,
        preview_every: int = 0,
        quotas: QuotaStore | None = None,
    ) -> None:
        self.store = store
        self.models = models
        self.default_model = default_model
        self.queue = JobQueue()
        self._data_dir = data_dir
        self._engines = engines
        self._job_timeout = job_timeout
        self._preview_every = preview_every
        self._quotas = quotas
        self._listeners: list[JobListener] = []
        self._workers: list[asyncio.Task[None]] = []
        self._running: dict[str, EngineProcess] = {}
        self._cancelled_by: dict[str, int] = {}

    def add_listener(self, listener: JobListener) -> None:
        self._listeners.append(listener)

    async def start(self) -> None:
        """Requeue what a previous run left unfinished, then start one worker per engine."""
        for job in await self.store.unfinished():
            if job.state is JobState.RUNNING:
                # It was cut off mid-run by a stop or crash: run it again from the start.
                await self.store.transition(job.id, JobState.QUEUED, outcome="requeued")
            await self.queue.put(job.id, job.lane)
        self._workers = [
            asyncio.create_task(self._work(engine), name=f"engine-worker-{engine.device}")
            for engine in self._engines
        ]

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        await asyncio.gather(*(engine.stop() for engine in self._engines))

    async def submit(self, spec: JobSpec, requester: Requester) -> Submitted:
        """Queue a job; with quotas, raises UserBanned or OverQuotaError (bot.store.quotas)."""
        job_id = new_job_id()
        args = (job_id, requester, spec.model_dump(mode="json"), spec.model, spec.seeds)
        if self._quotas is None:
            job = await self.store.create(*args)
        else:
            job = (await self._quotas.admit(*args)).job
        position = await self.queue.put(job_id, job.lane)
        log.info(
            "job %s: queued at position %d (%s lane) by user %d",
            job_id, position, job.lane, requester.user_id,
        )  # fmt: skip
        return Submitted(job=job, queue_position=position, lane=job.lane)

    async def cancel(self, job_id: str, actor_id: int) -> bool:
        """Cancel a queued or running job; False when it is neither (already finished).

        A queued job is cancelled here at once; a running one is stopped by its
        engine within one denoising step, and its worker records the end.
        """
        if self.queue.remove(job_id):
            await self._finish_cancelled(job_id, actor_id, "cancelled before it started")
            return True
        engine = self._running.get(job_id)
        if engine is None:
            return False
        self._cancelled_by[job_id] = actor_id
        await engine.cancel(job_id)
        return True

    async def _work(self, engine: EngineProcess) -> None:
        while True:
            job_id = await self.queue.take()
            try:
                await self._run(engine, job_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("job %s: unexpected failure", job_id)
                await self._finish_failed(
                    job_id, "something went wrong on our side", JobState.FAILED
                )

    async def _run(self, engine: EngineProcess, job_id: str) -> None:
        # From here on a cancel reaches this job, even while its engine starts.
        self._running[job_id] = engine
        try:
            await self._execute(engine, job_id)
        finally:
            del self._running[job_id]
            self._cancelled_by.pop(job_id, None)

    async def _execute(self, engine: EngineProcess, job_id: str) -> None:
        if not engine.alive:
            await engine.start()
        job = await self.store.transition(job_id, JobState.RUNNING, device=engine.device)
        await self._notify_started(job)
        spec = JobSpec.model_validate(job.spec)
        output_dir = self._data_dir / "images" / job_id
        output_dir.mkdir(parents=True, exist_ok=True)

        async def deliver(progress: Progress) -> None:
            for listener in self._listeners:
                await listener.job_progress(job_id, progress)

        if job_id in self._cancelled_by:
            # Cancelled while the engine started; no await between this check and
            # the request, so a later cancel finds the job in the engine.
            await self._finish_cancelled(job_id, self._cancelled_by[job_id], "cancelled")
            return
        # A batch of this one job: the time limit counts the engine's time only,
        # so progress reaches the listeners through a relay, not inline.
        request = spec.to_request(job_id, output_dir, self._data_dir, self._preview_every)
        try:
            async with ProgressRelay(deliver) as relay:
                outcome = (await engine.run(request, relay.put, self._job_timeout))[job_id]
        except EngineFailure as failure:
            log.error("job %s: %s", job_id, failure)
            await self._finish_failed(job_id, str(failure), JobState.FAILED)
            return
        if isinstance(outcome, JobError):
            if outcome.code is ErrorCode.CANCELLED:
                log.info("job %s: cancelled while running", job_id)
                await self._finish_cancelled(
                    job_id, self._cancelled_by.get(job_id), outcome.message
                )
                return
            log.warning("job %s: engine error %s: %s", job_id, outcome.code, outcome.message)
            await self._finish_failed(job_id, outcome.message, JobState.FAILED)
            return
        result = outcome
        outputs = [
            NewOutput(
                index=index,
                path=str(Path(image.path).relative_to(self._data_dir)),
                sha256=image.sha256,
                seed=image.seed,
                width=image.width,
                height=image.height,
                recipe=image.recipe,
            )
            for index, image in enumerate(result.images)
        ]
        job = await self.store.succeed(job_id, result.gpu_seconds, outputs)
        log.info("job %s: succeeded in %.2f GPU seconds", job_id, result.gpu_seconds)
        await self._notify_finished(job)

    async def _finish_cancelled(self, job_id: str, actor_id: int | None, message: str) -> None:
        job = await self.store.transition(
            job_id, JobState.CANCELLED, outcome="cancelled", actor_id=actor_id, error=message
        )
        await self._notify_finished(job)

    async def _finish_failed(self, job_id: str, message: str, state: JobState) -> None:
        job = await self.store.transition(job_id, state, outcome="error", error=message)
        await self._notify_finished(job)

    async def _notify_started(self, job: Job) -> None:
        for listener in self._listeners:
            await listener.job_started(job)

    async def _notify_finished(self, job: Job) -> None:
        # A front end that cannot deliver must not stop the worker.
        for listener in self._listeners:
            try:
                await listener.job_finished(job)
            except Exception:
                log.exception("job %s: delivery failed", job.id)

    async def engine_status(self) -> list[tuple[str, Status | None]]:
        """Each engine's device and what it has loaded; None for an engine not running."""
        return [(engine.device, await engine.status()) for engine in self._engines]

    def output_path(self, relative: str) -> Path:
        return self._data_dir / relative
