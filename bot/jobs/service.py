"""The job service: takes specs in, runs them on the engines in fair order, reports back.

Discord is one client of this service and the `atelier generate` CLI another;
neither knows how jobs are stored or run. The database is the queue: a job is
a row before its submitter hears it is queued, and each worker claims its next
batch from the rows (bot.jobs.scheduler decides which), so nothing lives only
in memory and nothing is lost across a restart.

Every worker is supervised: one that dies is logged with its traceback and
restarted. A job whose run is cut off (the engine or the bot died) is retried
once, then failed and refunded, so a job that kills the process cannot loop.
Listeners are told about jobs synchronously and must not block: a slow or
failing Discord never slows or fails a GPU job.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Protocol, TypeVar

from engine.protocol import (
    ErrorCode,
    GenerateRequest,
    JobError,
    JobResult,
    ModelSpec,
    Progress,
    Status,
)

from ..config import QueueConfig
from ..moderation.images import ImageModerationConfig, screen
from ..quota import Estimate
from ..store.db import persist
from ..store.jobs import (
    IllegalTransition,
    JobStore,
    NewJob,
    QueueAtLength,
    QueuedRow,
    Requester,
)
from ..store.models import Job, JobState, Lane, new_id
from ..store.quotas import QuotaStore, Refused
from .engine_client import EngineFailure, EngineProcess
from .pace import PACE_WINDOW, Pace
from .scheduler import Waiting, fair_order, for_engine, next_batch
from .spec import JobSpec, batch_key
from .withhold import outputs_of, withhold_inputs, withhold_outputs

log = logging.getLogger(__name__)

T = TypeVar("T")

# How often an idle worker looks at the queue even without a wake-up (another
# process may have queued a job).
POLL_SECONDS = 1.0
# Restarting a dead worker or a crashing engine backs off up to this.
MAX_BACKOFF = 60.0
# How long a cancel waits for a running job to stop (within one denoising step, usually).
CANCEL_WAIT_SECONDS = 10.0


class JobListener(Protocol):
    """What a front end (Discord, CLI) hears about jobs; each call must return at once."""

    def job_started(self, job: Job) -> None: ...

    def job_progress(self, job_id: str, progress: Progress) -> None: ...

    def job_finished(self, job: Job) -> None: ...


class QueueFull(Refused):
    def __init__(self, minutes: int) -> None:
        super().__init__(
            f"The queue is full right now; please try again in about {minutes} minute(s)."
        )


@dataclass(frozen=True)
class QueuePlace:
    position: int  # 1: the next job to run
    eta_seconds: float  # the estimated GPU time of the jobs ahead, shared by the engines


NEXT_IN_LINE = QueuePlace(1, 0.0)


@dataclass(frozen=True)
class CancelOutcome:
    """What a cancel came to: `job` as it ended (or still running, its engine slow to stop)."""

    job: Job
    # The job had ended before the cancel could stop it: nothing was cancelled.
    too_late: bool


@dataclass(frozen=True)
class Submitted:
    job: Job
    queue_position: int
    lane: Lane = Lane.NORMAL  # relax: over quota, runs when no in-quota job waits
    eta_seconds: float = 0.0
    # The GPU time and cost reserved for it (None without quotas).
    estimate: Estimate | None = None


def waiting_of(row: QueuedRow, default_estimate: float) -> Waiting:
    spec = JobSpec.model_validate(row.spec)
    return Waiting(
        job_id=row.job_id,
        user_id=row.user_id,
        model=spec.model,
        lane=row.lane,
        queued_at=row.queued_at,
        images=row.images,
        estimate=row.estimate if row.estimate is not None else default_estimate,
        batch_key=batch_key(spec),
    )


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
        queue: QueueConfig | None = None,
        batch_images: dict[str, int] | None = None,
        moderation: ImageModerationConfig | None = None,
    ) -> None:
        self.store = store
        self.models = models
        self.default_model = default_model
        self._data_dir = data_dir
        self._engines = engines
        self._job_timeout = job_timeout
        self._preview_every = preview_every
        self._quotas = quotas
        self._queue = queue or QueueConfig()
        # Images one request may carry, per device (bot.config EngineConfig.batch_images).
        self._batch_images = batch_images or {}
        # What flagged images meet (bot.moderation.images); the engines classify them.
        self._moderation = moderation or ImageModerationConfig()
        self._default_estimate = quotas.rules.default_gpu_seconds if quotas else 1.0
        self._listeners: list[JobListener] = []
        self._supervisors: list[asyncio.Task[None]] = []
        self._running: dict[str, EngineProcess] = {}
        # The models each engine ran last (what it most likely holds) and which are idle.
        self._loaded: dict[str, set[str]] = {engine.device: set() for engine in engines}
        self._idle: set[str] = set()
        # Engine failures in a row per device: a crashing engine is restarted with backoff.
        self._crashes: dict[str, int] = {engine.device: 0 for engine in engines}
        self._cancelled_by: dict[str, int | None] = {}
        # Running jobs cancelled by the bot itself (an HTTP API's stop): refunded in full,
        # where a member's own cancel pays for the GPU time used.
        self._refunded: set[str] = set()
        # Whoever waits for a job's end (cancel_and_wait), by job id.
        self._endings: dict[str, list[asyncio.Future[Job]]] = {}
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    def add_listener(self, listener: JobListener) -> None:
        self._listeners.append(listener)

    # -- start and stop --------------------------------------------------------------------

    async def start(self) -> None:
        """Put back what a previous run left running (or fail it after its last attempt).

        Workers do not start here: a front end starts them once it can deliver
        (`start_workers`), so a requeued job never finishes into a client that
        has not connected yet.
        """
        for job in await self.store.requeue_interrupted("the bot stopped while it ran"):
            if job.state is JobState.FAILED:
                self._notify_finished(job)

    def start_workers(self) -> None:
        self._supervisors = [
            asyncio.create_task(self._supervise(engine), name=f"engine-worker-{engine.device}")
            for engine in self._engines
        ]

    def stop_claiming(self) -> None:
        """Claim no further batch (the first step of a stop; running ones go on)."""
        self._stopping.set()
        self._wake.set()

    async def stop(self, grace: float = 0.0) -> None:
        """Stop claiming; give running batches `grace` seconds to finish, then return
        what is still running to the queue (its attempt not counted) and stop engines."""
        self.stop_claiming()
        unfinished: list[str] = []
        cancelled: dict[str, int | None] = {}
        if self._supervisors:
            _, late = await asyncio.wait(self._supervisors, timeout=grace)
            # Read before the late workers are cancelled: each one's `finally` forgets
            # its batch as it ends.
            unfinished, cancelled = list(self._running), dict(self._cancelled_by)
            for task in late:
                task.cancel()
            await asyncio.gather(*self._supervisors, return_exceptions=True)
        for job_id in unfinished:
            # A job ended meanwhile (its worker recorded it as it was cancelled) is left.
            with contextlib.suppress(IllegalTransition):
                if job_id in cancelled:  # its member asked for it to stop: it stays stopped
                    await self._finish(job_id, JobState.CANCELLED, "cancelled", cancelled[job_id])
                else:
                    await self.store.return_to_queue(job_id)
                    log.info("job %s: returned to the queue at stop", job_id)
        self._running.clear()
        await asyncio.gather(*(engine.stop() for engine in self._engines))

    # -- the door -------------------------------------------------------------------------

    async def submit(self, spec: JobSpec, requester: Requester) -> Submitted:
        """Queue a job; raises Refused (UserBanned, OverQuotaError, QueueFull) when not."""
        (submitted,) = await self.submit_many([spec], requester)
        return submitted

    async def submit_many(
        self,
        specs: Sequence[JobSpec],
        requester: Requester,
        message_ids: Sequence[int | None] = (),
    ) -> list[Submitted]:
        """Queue the jobs of one command ({…} choices, --n) together, each reserved
        against the member's quota, or none of them (Refused, as for `submit`).

        `message_ids`, when given, are the messages already showing each job (the
        follow-ups of a multi-job reply); the command settles once for them all.
        """
        # Read only to tell a lone job it is next; the admission counts the queue
        # again under the write lock against `[queue] max_length`.
        waiting = await self.store.waiting_count()
        priority = bool(set(requester.role_ids) & set(self._queue.priority_role_ids))
        ids = list(message_ids) or [requester.message_id] * len(specs)
        new = [
            NewJob(
                new_id(),
                dataclasses.replace(requester, message_id=message_id),
                spec,
                spec.model,
                spec.seeds,
            )
            for spec, message_id in zip(specs, ids, strict=True)
        ]
        estimates: list[Estimate | None]
        max_waiting = self._queue.max_length
        try:
            if self._quotas is None:
                jobs = await self.store.create_many(new, max_waiting)
                estimates = [None] * len(jobs)
            else:
                lane = Lane.PRIORITY if priority else Lane.NORMAL
                admissions = await self._quotas.admit_many(new, lane, max_waiting)
                jobs = [admission.job for admission in admissions]
                estimates = [admission.estimate for admission in admissions]
        except QueueAtLength as full:
            raise QueueFull(await self._minutes_to_drain(full.waiting)) from None
        self._wake.set()
        # A lone job that found the queue empty is next in line: its place needs no fair
        # order (whose reads would race the claim that starts it now). Should another
        # member's job have got in meanwhile, Discord's queued line is corrected at its
        # next refresh; an HTTP client's answer keeps position 1.
        alone = waiting == 0 and len(jobs) == 1
        submitted = []
        for job, estimate in zip(jobs, estimates, strict=True):
            place = NEXT_IN_LINE if alone else (await self.queue_place(job.id) or NEXT_IN_LINE)
            log.info(
                "job %s: queued at position %d (%s lane) by user %d",
                job.id,
                place.position,
                job.lane,
                requester.user_id,
            )
            submitted.append(Submitted(job, place.position, job.lane, place.eta_seconds, estimate))
        return submitted

    async def queue_place(self, job_id: str) -> QueuePlace | None:
        """Where a waiting job stands in the fair order; None once it runs or ended."""
        rows, served = await self.store.waiting_snapshot(self._fair_window)
        order = self._order(rows, served)
        for index, waiting in enumerate(order):
            if waiting.job_id == job_id:
                ahead = sum(w.estimate for w in order[:index])
                return QueuePlace(index + 1, ahead / max(1, len(self._engines)))
        return None

    async def queue_position(self, job_id: str) -> int | None:
        """1 for the next job to run; None once it runs or ended."""
        place = await self.queue_place(job_id)
        return None if place is None else place.position

    async def cancel(self, job_id: str, actor_id: int | None, *, refund: bool = False) -> bool:
        """Ask a queued or running job to stop; False when it already ended. A running
        job is charged the GPU time it used, unless `refund` (the bot, not its member,
        stopped it).

        A queued job is cancelled at once; a running one is stopped by its engine
        within one denoising step (only its own images, in a batch), and its
        worker records the end, unless the job finished first (its result was
        already on its way): `cancel_and_wait` says which.
        """
        if job_id not in self._running:
            try:
                job = await self.store.transition(
                    job_id,
                    JobState.QUEUED,
                    JobState.CANCELLED,
                    "cancelled",
                    actor_id=actor_id,
                    error="cancelled before it started",
                )
            except IllegalTransition as refused:
                if refused.found is not JobState.RUNNING:
                    return False
            else:
                self._notify_finished(job)
                return True
        # Claimed: a worker not yet past its check sees this first; one that has sent
        # the request (perhaps while the transition above was refused) is reached through
        # its engine.
        self._cancelled_by[job_id] = actor_id
        if refund:
            self._refunded.add(job_id)
        if (engine := self._running.get(job_id)) is not None:
            await engine.cancel(job_id)
        return True

    async def cancel_and_wait(
        self, job_id: str, actor_id: int | None, wait: float = CANCEL_WAIT_SECONDS
    ) -> CancelOutcome:
        """Cancel a job and wait (up to `wait` seconds) for its end, so the answer says
        what happened: cancelled, or ended first (a result recorded meanwhile is kept
        and charged), or still stopping."""
        ending: asyncio.Future[Job] = asyncio.get_running_loop().create_future()
        # Registered before anything is read, so an end in between is not missed.
        self._endings.setdefault(job_id, []).append(ending)
        try:
            if not await self.cancel(job_id, actor_id):
                return CancelOutcome(await self.store.get(job_id), too_late=True)
            try:
                async with asyncio.timeout(wait):
                    job = await ending
            except TimeoutError:
                job = await self.store.get(job_id)
            too_late = job.state.finished and job.state is not JobState.CANCELLED
            return CancelOutcome(job, too_late)
        finally:
            waiting = self._endings.get(job_id, [])
            if ending in waiting:
                waiting.remove(ending)
            if not waiting:
                self._endings.pop(job_id, None)

    # -- workers --------------------------------------------------------------------------

    async def _supervise(self, engine: EngineProcess) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            try:
                await self._work(engine)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "the worker for %s died; restarting it in %g s", engine.device, backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _work(self, engine: EngineProcess) -> None:
        def choose(rows: Sequence[QueuedRow], served: dict[int, float]) -> list[str]:
            elsewhere = set[str]().union(
                *(self._loaded[device] for device in self._idle if device != engine.device)
            )
            order = for_engine(self._order(rows, served), self._loaded[engine.device], elsewhere)
            limit = self._batch_images.get(engine.device, 1)
            return [w.job_id for w in next_batch(order, limit)]

        while not self._stopping.is_set():
            if (crashes := self._crashes[engine.device]) and not engine.alive:
                await asyncio.sleep(min(2.0 ** (crashes - 1), MAX_BACKOFF))
            if engine.warms_up and not engine.alive:
                # A compiling engine warms up for minutes: before any job, not in one.
                await engine.start()
            self._idle.add(engine.device)
            jobs = await self.store.claim(engine.device, choose, self._fair_window)
            if not jobs:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
                continue
            self._idle.discard(engine.device)
            if not engine.alive:
                self._loaded[engine.device].clear()
            self._loaded[engine.device].update(job.model for job in jobs)
            for job in jobs:
                self._running[job.id] = engine
            try:
                await self._run_batch(engine, jobs)
            finally:
                for job in jobs:
                    self._running.pop(job.id, None)
                    self._cancelled_by.pop(job.id, None)
                    self._refunded.discard(job.id)

    @property
    def _fair_window(self) -> timedelta:
        return timedelta(minutes=self._queue.fair_share_minutes)

    def _order(self, rows: Sequence[QueuedRow], served: dict[int, float]) -> list[Waiting]:
        return fair_order([waiting_of(row, self._default_estimate) for row in rows], served)

    async def _run_batch(self, engine: EngineProcess, jobs: list[Job]) -> None:
        """Run the claimed jobs as one engine request (one pipeline call) and record each
        job's own outcome; a job cancelled before the request was sent is left out."""
        for job in jobs:
            self._notify_started(job)
        pending = []
        for job in jobs:
            if job.id in self._cancelled_by:
                await self._finish(
                    job.id, JobState.CANCELLED, "cancelled", self._cancelled_by[job.id]
                )
            else:
                pending.append(job)
        if not pending:
            return
        claimed = {job.id: job for job in pending}
        request = self._request(pending)
        outcomes: dict[str, JobResult | JobError] = {}
        try:
            if not engine.alive:
                await engine.start()
            # `job_timeout` is per job: a batch of n jobs gets n times it.
            time_limit = self._job_timeout * len(request.jobs)
            outcomes = await engine.run(request, self._on_progress, time_limit)
            self._crashes[engine.device] = 0
        except EngineFailure as failure:
            log.error("engine on %s failed: %s", engine.device, failure)
            self._crashes[engine.device] += 1
            await engine.kill()
            outcomes = failure.outcomes
            for job_id in request.job_ids:
                if job_id not in outcomes:
                    await self._after_crash(job_id, str(failure))
        for outcome in outcomes.values():
            if isinstance(outcome, JobResult):
                await self._succeed(outcome, claimed[outcome.job_id])
            elif outcome.code is ErrorCode.CONTENT_FILTERED and outcome.job_id in claimed:
                job = claimed[outcome.job_id]
                args = (self.store, self._data_dir, self._moderation, outcome, job)
                self._notify_finished(await withhold_inputs(*args))
            else:
                await self._job_error(outcome)

    def _request(self, jobs: list[Job]) -> GenerateRequest:
        """One engine request for a batch, named as its claim named it. No file is
        touched: the engine makes each job's output folder. So the request is sent before
        this task yields to the "starting" edits that the claim set off."""
        specs = [JobSpec.model_validate(job.spec) for job in jobs]
        parts = []
        for job, spec in zip(jobs, specs, strict=True):
            output_dir = self._data_dir / "images" / job.id
            part = spec.batch_job(job.id, output_dir, self._data_dir)
            policy = self._moderation.policy(job.nsfw_channel)
            parts.append(part.model_copy(update={"nsfw_policy": policy}))
        batch_id = jobs[0].batch_id
        assert batch_id is not None  # every claimed job has one
        return GenerateRequest.for_jobs(
            batch_id, specs[0].shared_params(), parts, self._preview_every
        )

    def _on_progress(self, progress: Progress) -> None:
        for listener in self._listeners:
            listener.job_progress(progress.job_id, progress)

    async def _job_error(self, error: JobError) -> None:
        job_id = error.job_id or ""
        if error.code is ErrorCode.CANCELLED:
            log.info(
                "job %s: cancelled while running, after %.2f GPU seconds", job_id, error.gpu_seconds
            )
            actor_id = self._cancelled_by.get(job_id)
            job = await persist(
                lambda: self.store.cancel_started(
                    job_id,
                    error.gpu_seconds,
                    actor_id,
                    error.message,
                    charge=job_id not in self._refunded,
                )
            )
            self._notify_finished(job)
            return
        log.warning("job %s: engine error %s: %s", job_id, error.code, error.message)
        await self._finish(job_id, JobState.FAILED, error.message)

    async def _succeed(self, result: JobResult, claimed: Job) -> None:
        policy = self._moderation.policy(claimed.nsfw_channel)
        screened = screen(result, policy, self._moderation.image_threshold)
        if screened.withheld:
            args = (self.store, self._data_dir, self._moderation, result, screened)
            self._notify_finished(await withhold_outputs(*args))
            return
        outputs = outputs_of(result, self._data_dir, screened, policy)
        job = await persist(
            lambda: self.store.succeed(
                result.job_id, result.gpu_seconds, outputs, moderation=screened.record
            )
        )
        log.info("job %s: succeeded in %.2f GPU seconds", job.id, result.gpu_seconds)
        self._notify_finished(job)

    async def _after_crash(self, job_id: str, reason: str) -> None:
        if job_id in self._cancelled_by:  # its member asked it to stop: not run again
            await self._finish(job_id, JobState.CANCELLED, "cancelled", self._cancelled_by[job_id])
            return
        job = await persist(lambda: self.store.retry_or_fail(job_id, reason, crashes="the engine"))
        if job.state is JobState.QUEUED:
            log.info("job %s: requeued after the engine failed", job_id)
            self._wake.set()
        else:
            self._notify_finished(job)

    async def _finish(
        self, job_id: str, state: JobState, message: str, actor_id: int | None = None
    ) -> None:
        outcome = "cancelled" if state is JobState.CANCELLED else "error"
        job = await persist(
            lambda: self.store.transition(
                job_id, JobState.RUNNING, state, outcome, actor_id=actor_id, error=message
            )
        )
        self._notify_finished(job)

    async def pace(self) -> Pace:
        """How fast the queue moves now: every estimate from the measured pace starts here."""
        return Pace(await self.store.finished_per_minute(PACE_WINDOW))

    async def _minutes_to_drain(self, waiting: int) -> int:
        minutes = (await self.pace()).minutes_to_drain(waiting)
        return 10 if minutes is None else minutes

    # -- listeners ------------------------------------------------------------------------

    def _notify_started(self, job: Job) -> None:
        for listener in self._listeners:
            listener.job_started(job)

    def _notify_finished(self, job: Job) -> None:
        for ending in self._endings.pop(job.id, []):
            if not ending.done():
                ending.set_result(job)
        for listener in self._listeners:
            listener.job_finished(job)

    async def engine_status(self) -> list[tuple[str, Status | None]]:
        """Each engine's device and what it has loaded; None for an engine not running."""
        return [(engine.device, await engine.status()) for engine in self._engines]

    def output_path(self, relative: str) -> Path:
        return self._data_dir / relative
