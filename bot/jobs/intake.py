"""Intake: takes jobs into the queue (admission, quota reservation), says where they stand
and how fast the queue moves, and records cancels.

The database is the queue: a job is a row before its submitter hears it is queued. Intake
knows nothing of engines or of what runs where: a cancel of a running job is a request
written on the job's row, which the pool holding the job reads, in this process or
another. It tells a pool in its own process only the two wake-ups of `Workers`, so that
one acts at once rather than at its next poll.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..config import QueueConfig
from ..quota import Estimate
from ..store.jobs import IllegalTransition, JobStore, NewJob, QueueAtLength, Requester
from ..store.models import Job, JobState, Lane, new_id
from ..store.quotas import QuotaStore, Refused
from .cache import NOT_CACHED, Plan, ResultCache
from .events import JobEvents, JobListener
from .fair_queue import FairQueue
from .pace import LIVE_WINDOW, PACE_WINDOW, Pace
from .spec import JobSpec

log = logging.getLogger(__name__)

# How long a cancel waits for a running job to stop (within one denoising step, usually).
CANCEL_WAIT_SECONDS = 10.0
# A job that moves on while it is asked to stop is asked again, this many times in all.
CANCEL_TRIES = 3


class Workers(Protocol):
    """What intake tells the worker pool (bot.jobs.pool.WorkerPool)."""

    def jobs_queued(self) -> None:
        """New jobs wait: an idle worker looks at the queue now, not at its next poll."""

    def cancels_requested(self) -> None:
        """A running job was asked to stop (in the store): the pool reads the requests
        now, not at its next poll."""


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


class JobIntake:
    def __init__(
        self,
        *,
        store: JobStore,
        events: JobEvents,
        workers: Workers,
        fair: FairQueue,
        engine_count: int,
        quotas: QuotaStore | None = None,
        queue: QueueConfig | None = None,
        cache: ResultCache | None = None,
    ) -> None:
        self.store = store
        self._cache = cache
        self._events = events
        self._workers = workers
        self._fair = fair
        # This process's own engines (none in a pure front door): counted as working the
        # queue even before they claimed anything; other hosts' are read from the claims.
        self._engine_count = engine_count
        self._quotas = quotas
        self._queue = queue or QueueConfig()

    def add_listener(self, listener: JobListener) -> None:
        self._events.add(listener)

    async def submit(self, spec: JobSpec, requester: Requester) -> Submitted:
        """Queue a job; raises Refused (UserBanned, OverQuotaError, QueueFull) when not."""
        (submitted,) = await self.submit_many([spec], requester)
        return submitted

    async def submit_many(
        self,
        specs: Sequence[JobSpec],
        requester: Requester,
        message_ids: Sequence[int | None] = (),
        *,
        repeatable: bool = False,
    ) -> list[Submitted]:
        """Queue the jobs of one command ({…} choices, --n) together, each reserved
        against the member's quota, or none of them (Refused, as for `submit`).

        `message_ids`, when given, are the messages already showing each job (the
        follow-ups of a multi-job reply); the command settles once for them all.

        `repeatable`: the member named the seeds, so the result cache (when on) may
        answer the jobs: when each has the member's identical earlier result, they are
        written succeeded from it, never queued nor charged (their Submitted at place
        0); a job whose identical twin is in flight is queued to wait for its result.
        """
        if not repeatable or self._cache is None:
            return await self._admit(specs, requester, message_ids, [NOT_CACHED] * len(specs))
        async with self._cache.admitting(requester.user_id):
            plans = await self._cache.plans(specs, requester.user_id)
            return await self._admit(specs, requester, message_ids, plans)

    async def _admit(
        self,
        specs: Sequence[JobSpec],
        requester: Requester,
        message_ids: Sequence[int | None],
        plans: Sequence[Plan],
    ) -> list[Submitted]:
        """`submit_many` with each job's cache plan made."""
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
                result_key=plan.key,
                cached_from=plan.source,
            )
            for spec, message_id, plan in zip(specs, ids, plans, strict=True)
        ]
        answers = [plan.answered for plan in plans]
        if self._cache is not None and all(answers):
            cached = await self._cache.answer(new, [a for a in answers if a is not None])
            if cached is not None:
                return [Submitted(job, 0) for job in cached]
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
        self._workers.jobs_queued()
        jobs = await self._settled(jobs)
        # A lone job that found the queue empty is next in line: its place needs no fair
        # order (whose reads would race the claim that starts it now). Should another
        # member's job have got in meanwhile, Discord's queued line is corrected at its
        # next refresh; an HTTP client's answer keeps position 1.
        alone = waiting == 0 and len(jobs) == 1
        submitted = []
        for job, estimate in zip(jobs, estimates, strict=True):
            if job.state.finished:  # answered from its twin's result: nothing reserved
                submitted.append(Submitted(job, 0))
                continue
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

    async def _settled(self, jobs: list[Job]) -> list[Job]:
        """The jobs just queued, those waiting for a twin that ended meanwhile (or before:
        one of a command the cache could answer only in part) answered or let run now."""
        sources = {job.cached_from for job in jobs if job.cached_from is not None}
        if self._cache is None or not sources:
            return jobs
        answered = {}
        for source in sorted(sources):
            answered.update({job.id: job for job in await self._cache.settle(source)})
        return [answered.get(job.id, job) for job in jobs]

    async def queue_place(self, job_id: str) -> QueuePlace | None:
        """Where a waiting job stands in the fair order; None once it runs or ended."""
        rows, served = await self.store.waiting_snapshot(self._fair.window)
        order = self._fair.order(rows, served)
        for index, waiting in enumerate(order):
            if waiting.job_id == job_id:
                ahead = sum(w.estimate for w in order[:index])
                return QueuePlace(index + 1, ahead / await self.live_engine_count())
        return None

    async def live_engine_count(self) -> int:
        """The engines that share the work ahead of a waiting job: this process's own and
        every other worker's that holds a lease or finished a job within LIVE_WINDOW (at
        least 1, so a wait is never divided by none)."""
        live = await self.store.live_engines(LIVE_WINDOW)
        others = {engine for engine in live if engine[0] != self.store.worker_id}
        return max(1, self._engine_count + len(others))

    async def queue_position(self, job_id: str) -> int | None:
        """1 for the next job to run; None once it runs or ended."""
        place = await self.queue_place(job_id)
        return None if place is None else place.position

    async def cancel(self, job_id: str, actor_id: int | None, *, refund: bool = False) -> bool:
        """Ask a queued or running job to stop; False when it already ended. A running
        job is charged the GPU time it used, unless `refund` (the bot, not its member,
        stopped it).

        A queued job is cancelled at once; for a running one the request is recorded
        on the job (`JobStore.request_cancel`, audited), and the worker holding it,
        wherever it runs, stops it through its engine within about a denoising step
        (only its own images, in a batch) and records the end, unless the job finished
        first (its result was already on its way): `cancel_and_wait` says which.
        """
        # The store says where the job stands (read first, so that asking a running job
        # is not a refused transition in the log). One that moves on meanwhile (claimed,
        # or given back to the queue at a stop) is asked again in its new state.
        found = (await self.store.get(job_id)).state
        for _ in range(CANCEL_TRIES):
            try:
                if found is JobState.QUEUED:
                    job = await self.store.transition(
                        job_id,
                        JobState.QUEUED,
                        JobState.CANCELLED,
                        "cancelled",
                        actor_id=actor_id,
                        error="cancelled before it started",
                    )
                    self._events.finished(job)
                    return True
                if found is not JobState.RUNNING:
                    return False
                # False for a job asked already: the first request stands, and it stops.
                await self.store.request_cancel(job_id, actor_id, refund=refund)
                self._workers.cancels_requested()
                return True
            except IllegalTransition as refused:
                found = refused.found
        return False

    async def cancel_and_wait(
        self, job_id: str, actor_id: int | None, wait: float = CANCEL_WAIT_SECONDS
    ) -> CancelOutcome:
        """Cancel a job and wait (up to `wait` seconds) for its end, so the answer says
        what happened: cancelled, or ended first (a result recorded meanwhile is kept
        and charged), or still stopping."""
        # Registered before anything is read, so an end in between is not missed.
        ending = self._events.ending(job_id)
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
            self._events.forget(job_id, ending)

    async def pace(self) -> Pace:
        """How fast the queue moves now: every estimate from the measured pace starts here."""
        return Pace(await self.store.finished_per_minute(PACE_WINDOW))

    async def _minutes_to_drain(self, waiting: int) -> int:
        minutes = (await self.pace()).minutes_to_drain(waiting)
        return 10 if minutes is None else minutes
