"""The worker pool: one supervised worker per engine claims batches in fair order, runs
them, screens the images and records each job's end.

Every worker is supervised: one that dies is logged with its traceback and restarted. A
job whose run is cut off (the engine or the bot died) is retried once, then failed and
refunded, so a job that kills the process cannot loop.

Each claim is held under a lease (`claimed_by` this process, `lease_until`) that a
heartbeat renews while the batch runs; the pool's reaper (bot.jobs.reaper) returns the
jobs of a worker that stopped renewing, in this process or another, once their lease
ran out. A run's end is recorded only while its claim is still this process's: a result
of a job that was reaped meanwhile is discarded (logged and audited), never charged or
delivered. Intake reaches the pool only
through bot.jobs.intake.Workers (`jobs_queued`, `cancels_requested`), both wake-ups: what
to do is in the store, so a pool in another process works the same without them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Collection, Sequence
from datetime import timedelta
from functools import partial
from pathlib import Path

from engine.protocol import ErrorCode, GenerateRequest, JobError, JobResult, Status

from ..blobs import Blobs
from ..blobs.local import LocalBlobs
from ..moderation.images import ImageModerationConfig, screen
from ..store.db import persist
from ..store.jobs import (
    DEFAULT_LEASE,
    CancelRequest,
    IllegalTransition,
    JobStore,
    LeaseLost,
    QueuedRow,
)
from ..store.models import Job, JobState
from .engine_client import EngineFailure, EngineProcess
from .events import JobEvents
from .fair_queue import FairQueue
from .reaper import Reaper
from .scheduler import EngineView
from .withhold import outputs_of, withhold_inputs, withhold_outputs

log = logging.getLogger(__name__)

# How often an idle worker looks at the queue even without a wake-up (another
# process may have queued a job).
POLL_SECONDS = 1.0
# How often the pool reads the cancel requests of the jobs it runs (bot.store.jobs
# `request_cancel`, which another process may write): a stop reaches the engine within
# about a denoising step. A cancel made in this process wakes it at once.
CANCEL_POLL_SECONDS = 0.5
# Restarting a dead worker or a crashing engine backs off up to this.
MAX_BACKOFF = 60.0
# The heartbeat renews the leases of running jobs this many times per lease, and the
# reaper looks for expired ones as often: a renewal that one slow database round misses
# still lands well before the lease runs out.
BEATS_PER_LEASE = 3


class WorkerPool:
    def __init__(
        self,
        *,
        store: JobStore,
        events: JobEvents,
        fair: FairQueue,
        engines: list[EngineProcess],
        data_dir: Path,
        job_timeout: float,
        preview_every: int = 0,
        batch_images: dict[str, int] | None = None,
        moderation: ImageModerationConfig | None = None,
        lease: timedelta = DEFAULT_LEASE,
        switch_after: timedelta = timedelta(0),
        models: Collection[str] | None = None,
        blobs: Blobs | None = None,
    ) -> None:
        self.store = store
        self._events = events
        self._fair = fair
        self._engines = engines
        self._data_dir = data_dir
        # Where inputs are read from and images kept (bot.blobs); data_dir by default.
        self._blobs = blobs or LocalBlobs(data_dir)
        self._job_timeout = job_timeout
        self._preview_every = preview_every
        # Images one request may carry, per device (bot.config EngineConfig.batch_images).
        self._batch_images = batch_images or {}
        # What flagged images meet (bot.moderation.images); the engines classify them.
        self._moderation = moderation or ImageModerationConfig()
        # How long a claim holds unless renewed, and the models this pool serves (it
        # claims no other's jobs; None: any).
        self._lease = lease
        self._models = models
        # An engine keeps to its loaded models unless another's oldest job waited this.
        self._switch_after = switch_after
        self._supervisors: list[asyncio.Task[None]] = []
        self._heartbeat: asyncio.Task[None] | None = None
        self._reaper: Reaper | None = None
        self._running: dict[str, EngineProcess] = {}
        # The models each engine ran last (what it most likely holds) and which are idle.
        self._loaded: dict[str, set[str]] = {engine.device: set() for engine in engines}
        self._idle: set[str] = set()
        # Engine failures in a row per device: a crashing engine is restarted with backoff.
        self._crashes: dict[str, int] = {engine.device: 0 for engine in engines}
        # The cancel requests read for claimed jobs; those sent in an engine request, and
        # the ones whose stop was passed on to that engine.
        self._cancels: dict[str, CancelRequest] = {}
        self._in_engine: set[str] = set()
        self._stops_sent: set[str] = set()
        self._cancel_watch: asyncio.Task[None] | None = None
        self._cancel_wake = asyncio.Event()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    # -- start and stop --------------------------------------------------------------------

    async def start(self) -> None:
        """Put back the jobs whose lease ran out (a killed worker's, this host's or
        another's), or fail them after their last attempt; a job another worker still
        holds is left to it. This process's own runs were given back at its stop.

        Workers do not start here: a front end starts them once it can deliver
        (`start_workers`), so a requeued job never finishes into a client that
        has not connected yet.
        """
        self._reaper = Reaper(
            self.store,
            self._lease.total_seconds() / BEATS_PER_LEASE,
            self._events.finished,
            self._wake.set,
        )
        await self._reaper.reap()

    def start_workers(self) -> None:
        """Start a worker per engine, and the tasks every pool runs even with none: the
        cancel watch, the heartbeat of its leases and the reaper."""
        self._supervisors = [
            asyncio.create_task(self._supervise(engine), name=f"engine-worker-{engine.device}")
            for engine in self._engines
        ]
        self._cancel_watch = asyncio.create_task(self._watch_cancels(), name="cancel-watch")
        self._heartbeat = asyncio.create_task(self._keep_leases(), name="lease-heartbeat")
        if self._reaper is not None:
            self._reaper.start()

    def stop_claiming(self) -> None:
        """Claim no further batch (the first step of a stop; running ones go on)."""
        self._stopping.set()
        self._wake.set()

    async def stop(self, grace: float = 0.0) -> None:
        """Stop claiming; give running batches `grace` seconds to finish, then return
        what is still running to the queue (its attempt not counted; one asked to stop is
        cancelled instead) and stop engines."""
        self.stop_claiming()
        unfinished: list[str] = []
        if self._supervisors:
            _, late = await asyncio.wait(self._supervisors, timeout=grace)
            # Read before the late workers are cancelled: each one's `finally` forgets
            # its batch as it ends.
            unfinished = list(self._running)
            for task in late:
                task.cancel()
            await asyncio.gather(*self._supervisors, return_exceptions=True)
        if self._cancel_watch is not None:
            self._cancel_watch.cancel()
            await asyncio.gather(self._cancel_watch, return_exceptions=True)
        cancelled = await self.store.cancel_requests(unfinished) if unfinished else {}
        for job_id in unfinished:
            # A job ended meanwhile (its worker recorded it as it was cancelled) is left,
            # and so is one whose lease ran out (the reaper gave it back already).
            with contextlib.suppress(IllegalTransition):
                if job_id in cancelled:  # asked to stop: it stays stopped
                    await self._cancel_unrun(job_id, cancelled[job_id])
                else:
                    await self.store.return_to_queue(job_id)
                    log.info("job %s: returned to the queue at stop", job_id)
        self._running.clear()
        # The leases go last: the jobs given back above are no longer this process's.
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        if self._reaper is not None:
            await self._reaper.stop()
        await asyncio.gather(*(engine.stop() for engine in self._engines))

    # -- what intake tells the pool (bot.jobs.intake.Workers) -----------------------------

    def jobs_queued(self) -> None:
        self._wake.set()

    def cancels_requested(self) -> None:
        self._cancel_wake.set()

    # -- cancels: requests in the store, stops through the engines --------------------------

    async def _watch_cancels(self) -> None:
        """Pass each cancel request of a running job on to its engine, for as long as the
        pool runs: read every CANCEL_POLL_SECONDS, and at once when intake in this process
        or (on PostgreSQL) a notification says one was made. A failed read (the database
        restarting) is logged and tried again."""
        async with self.store.hearing_cancels(self._heard_cancel):
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cancel_wake.wait(), CANCEL_POLL_SECONDS)
                # Cleared before the read, so a request made during it wakes the next one.
                self._cancel_wake.clear()
                try:
                    await self._pass_on_cancels()
                except Exception:
                    log.exception("reading the cancel requests failed; trying again")

    def _heard_cancel(self, job_id: str) -> None:
        if job_id in self._running:  # another pool's job: nothing here to read
            self._cancel_wake.set()

    async def _pass_on_cancels(self) -> None:
        if not self._running:
            return
        self._cancels.update(await self.store.cancel_requests(list(self._running)))
        # Only a job its engine has been sent can be stopped there; one requested before
        # that is left out of the request (`_run_batch`), or passed on at the next poll.
        for job_id in (self._cancels.keys() & self._in_engine) - self._stops_sent:
            if (engine := self._running.get(job_id)) is not None:
                self._stops_sent.add(job_id)
                try:
                    await engine.cancel(job_id)
                except EngineFailure as failure:  # its batch fails with the engine
                    log.warning("job %s: the stop did not reach its engine: %s", job_id, failure)

    # -- leases: the heartbeat ---------------------------------------------------------------

    async def _keep_leases(self) -> None:
        """Renew the lease of every job this pool runs, BEATS_PER_LEASE times per lease,
        for as long as the pool runs. A job no longer renewed was reaped (this process
        was cut off longer than its lease): its run goes on, but its end is discarded
        (`_unless_lost`). A failed renewal (the database restarting) is tried again."""
        every = self._lease.total_seconds() / BEATS_PER_LEASE
        while True:
            await asyncio.sleep(every)
            if not (running := set(self._running)):
                continue
            try:
                lost = running - await self.store.renew_leases(running, self._lease)
            except Exception:
                log.exception("renewing the leases of running jobs failed; trying again")
                continue
            for job_id in lost & set(self._running):
                log.warning("job %s: its lease was lost; its result will be discarded", job_id)

    @contextlib.asynccontextmanager
    async def _unless_lost(self, job_id: str, outcome: str) -> AsyncIterator[None]:
        """Record a run's end inside; one refused because the job's claim is no longer
        this process's (LeaseLost: reaped, maybe running elsewhere) is discarded: logged
        and audited, not delivered, its result uncharged."""
        try:
            yield
        except LeaseLost as lost:
            log.warning("job %s: %s discarded: the job's lease was lost", job_id, outcome)
            await persist(partial(self.store.record_discarded, job_id, lost, outcome))

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
        def choose(rows: Sequence[QueuedRow], served: dict[int, float]) -> list[str] | None:
            elsewhere = set[str]().union(
                *(self._loaded[device] for device in self._idle if device != engine.device)
            )
            view = EngineView(self._loaded[engine.device], elsewhere, self._switch_after)
            limit = self._batch_images.get(engine.device, 1)
            # A job reaped from one of this pool's own batches (its heartbeat failed)
            # is not claimed again here while that batch still runs.
            return self._fair.choose(rows, served, view, limit, skip=self._running)

        while not self._stopping.is_set():
            if (crashes := self._crashes[engine.device]) and not engine.alive:
                await asyncio.sleep(min(2.0 ** (crashes - 1), MAX_BACKOFF))
            if engine.warms_up and not engine.alive:
                # A compiling engine warms up for minutes: before any job, not in one.
                await engine.start()
            self._idle.add(engine.device)
            jobs = await self.store.claim(
                engine.device, choose, self._fair.window, lease=self._lease, models=self._models
            )
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
                await self._blobs.unstage(_staging(jobs))
                for job in jobs:
                    self._running.pop(job.id, None)
                    self._cancels.pop(job.id, None)
                    self._in_engine.discard(job.id)
                    self._stops_sent.discard(job.id)

    async def _run_batch(self, engine: EngineProcess, jobs: list[Job]) -> None:
        """Run the claimed jobs as one engine request (one pipeline call) and record each
        job's own outcome; a job cancelled before the request was sent is left out."""
        for job in jobs:
            self._events.started(job)
        self._cancels.update(await self.store.cancel_requests([job.id for job in jobs]))
        pending = []
        for job in jobs:
            if (requested := self._cancels.get(job.id)) is not None:
                async with self._unless_lost(job.id, "cancelled before it ran"):
                    await self._cancel_unrun(job.id, requested)
            else:
                pending.append(job)
        if not pending:
            return
        claimed = {job.id: job for job in pending}
        # The inputs as files the engine can read (the local store's own: no I/O, no yield).
        keys = [key for job in pending for key in job.spec.input_paths.values()]
        request = self._request(pending, await self._blobs.stage(_staging(jobs), keys))
        outcomes: dict[str, JobResult | JobError] = {}
        try:
            if not engine.alive:
                await engine.start()
            # `job_timeout` is per job: a batch of n jobs gets n times it.
            time_limit = self._job_timeout * len(request.jobs)
            # Marked as the request goes: `engine.run` writes it before it first yields.
            self._in_engine.update(request.job_ids)
            outcomes = await engine.run(request, self._events.progress, time_limit)
            self._crashes[engine.device] = 0
        except EngineFailure as failure:
            log.error("engine on %s failed: %s", engine.device, failure)
            self._crashes[engine.device] += 1
            await engine.kill()
            outcomes = failure.outcomes
            for job_id in request.job_ids:
                if job_id not in outcomes:
                    async with self._unless_lost(job_id, "cut off by its engine"):
                        await self._after_crash(job_id, str(failure))
        for outcome in outcomes.values():
            ended = "succeeded" if isinstance(outcome, JobResult) else f"error {outcome.code}"
            async with self._unless_lost(outcome.job_id or "", ended):
                if isinstance(outcome, JobResult):
                    await self._succeed(outcome, claimed[outcome.job_id])
                elif outcome.code is ErrorCode.CONTENT_FILTERED and outcome.job_id in claimed:
                    job = claimed[outcome.job_id]
                    args = (self.store, self._blobs, self._moderation, outcome, job)
                    self._events.finished(await withhold_inputs(*args))
                else:
                    await self._job_error(outcome)

    def _request(self, jobs: list[Job], inputs: Path) -> GenerateRequest:
        """One engine request for a batch, named as its claim named it. No file is
        touched: the engine makes each job's output folder. So the request is sent before
        this task yields to the "starting" edits that the claim set off. Input keys are
        made paths under `inputs`, where they were staged."""
        specs = [job.spec for job in jobs]
        parts = []
        for job, spec in zip(jobs, specs, strict=True):
            output_dir = self._data_dir / "images" / job.id
            part = spec.batch_job(job.id, output_dir, inputs)
            policy = self._moderation.policy(job.nsfw_channel)
            parts.append(part.model_copy(update={"nsfw_policy": policy}))
        batch_id = jobs[0].batch_id
        assert batch_id is not None  # every claimed job has one
        return GenerateRequest.for_jobs(
            batch_id, specs[0].shared_params(inputs), parts, self._preview_every
        )

    async def _job_error(self, error: JobError) -> None:
        job_id = error.job_id or ""
        if error.code is ErrorCode.CANCELLED:
            log.info(
                "job %s: cancelled while running, after %.2f GPU seconds", job_id, error.gpu_seconds
            )
            requested = self._cancels.get(job_id, CancelRequest(None, refund=False))
            job = await persist(
                lambda: self.store.cancel_started(
                    job_id,
                    error.gpu_seconds,
                    requested.actor_id,
                    error.message,
                    charge=not requested.refund,
                )
            )
            self._events.finished(job)
            return
        log.warning("job %s: engine error %s: %s", job_id, error.code, error.message)
        await self._finish(job_id, JobState.FAILED, error.message)

    async def _succeed(self, result: JobResult, claimed: Job) -> None:
        policy = self._moderation.policy(claimed.nsfw_channel)
        screened = screen(result, policy, self._moderation.image_threshold)
        if screened.withheld:
            args = (self.store, self._blobs, self._moderation, result, screened)
            self._events.finished(await withhold_outputs(*args))
            return
        outputs = outputs_of(result, self._data_dir, screened, policy)
        # Stored before the row says so: whoever reads the job finds its images.
        await self._blobs.publish(output.path for output in outputs)
        job = await persist(
            lambda: self.store.succeed(
                result.job_id, result.gpu_seconds, outputs, moderation=screened.record
            )
        )
        log.info("job %s: succeeded in %.2f GPU seconds", job.id, result.gpu_seconds)
        self._events.finished(job)

    async def _after_crash(self, job_id: str, reason: str) -> None:
        # One asked to stop is cancelled there, not run again.
        job = await persist(lambda: self.store.retry_or_fail(job_id, reason, crashes="the engine"))
        if job.state is JobState.QUEUED:
            log.info("job %s: requeued after the engine failed", job_id)
            self._wake.set()
        else:
            self._events.finished(job)

    async def _cancel_unrun(self, job_id: str, requested: CancelRequest) -> None:
        """A claimed job asked to stop before its engine got it, or still unfinished at a
        stop: cancelled and refunded, audited in the name of who asked."""
        await self._finish(job_id, JobState.CANCELLED, "cancelled", requested.actor_id)

    async def _finish(
        self, job_id: str, state: JobState, message: str, actor_id: int | None = None
    ) -> None:
        outcome = "cancelled" if state is JobState.CANCELLED else "error"
        job = await persist(
            lambda: self.store.transition(
                job_id, JobState.RUNNING, state, outcome, actor_id=actor_id, error=message
            )
        )
        self._events.finished(job)

    async def engine_status(self) -> list[tuple[str, Status | None]]:
        """Each engine's device and what it has loaded; None for an engine not running."""
        return [(engine.device, await engine.status()) for engine in self._engines]


def _staging(jobs: list[Job]) -> str:
    """The name a batch's staged inputs go under: its batch id (every claim sets one)."""
    return jobs[0].batch_id or jobs[0].id
