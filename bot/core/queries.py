"""What a member may ask about, for either door: a job, their place in the queue, their
history, their balance, when a job should be done.

Time estimates: where a waiting job stands and when it starts come from the fair
order and the GPU-seconds estimates of the jobs ahead of it (the job service's
queue place, which Discord shows); when it should be done, and how long the queue
takes to drain, from the one measured pace (bot.jobs.pace)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from ..jobs.pace import seconds_until_done
from ..jobs.service import JobService, QueuePlace
from ..store.jobs import JobNotFound
from ..store.models import Job, JobState
from ..store.quotas import QuotaStore
from .door import DEFAULT_SECONDS_PER_JOB


@dataclass(frozen=True)
class Queued:
    """One of the member's unfinished jobs: running, or waiting at `place` (None: about
    to start)."""

    job: Job
    place: QueuePlace | None


@dataclass(frozen=True)
class QueueView:
    """The member's own jobs (running first, then by age) and how busy the queue is."""

    mine: list[Queued]
    others_waiting: int
    others_running: int
    other_members: int


@dataclass(frozen=True)
class HistoryPage:
    jobs: Sequence[Job]
    offset: int
    total: int


@dataclass(frozen=True)
class Balance:
    """What is left of a member's daily limits; None where a limit is not set."""

    images_left: int | None
    gpu_seconds_left: float | None
    # The least money left under a cost or GPU-seconds limit (priced); None: unlimited.
    credits: float | None
    currency: str
    resets_at: datetime


class Queries:
    def __init__(self, *, jobs: JobService, quotas: QuotaStore | None, engines: int) -> None:
        self._jobs = jobs
        self._quotas = quotas
        self._engines = engines

    async def done_in(self, job_id: str, position: int, left: float = 1.0) -> float:
        """About how long until the job is done: the jobs up to it (`position`: 1 once it
        runs, with `left` of it still to do) at the queue's measured pace over every
        engine, or at its own GPU-seconds estimate before there is a pace."""
        per_job = (await self._jobs.pace()).seconds_per_job()
        if per_job is None:
            reserved = await self._jobs.store.reserved_seconds(job_id)
            per_job = (reserved or DEFAULT_SECONDS_PER_JOB) / self._engines
        return seconds_until_done(per_job, position, left)

    async def job(self, job_id: str, *, of: int | None = None) -> Job | None:
        """The job as stored; None when it is not (or, with `of`, not that member's: the
        HTTP API shows a member their own jobs only)."""
        try:
            job = await self._jobs.store.get(job_id)
        except JobNotFound:
            return None
        return job if of is None or job.user_id == of else None

    async def by_message(self, message_id: int) -> Job | None:
        """The job a Discord message shows, if it shows one."""
        return await self._jobs.store.by_message(message_id)

    async def unfinished_of(self, user_id: int) -> Sequence[Job]:
        """The member's queued and running jobs, newest first."""
        return await self._jobs.store.unfinished_of(user_id)

    async def queue(self, user_id: int) -> QueueView:
        everyone = await self._jobs.store.unfinished()
        mine = sorted(
            (job for job in everyone if job.user_id == user_id),
            key=lambda job: (job.state is not JobState.RUNNING, job.created_at),
        )
        others = [job for job in everyone if job.user_id != user_id]
        waiting = sum(job.state is JobState.QUEUED for job in others)
        return QueueView(
            mine=[Queued(job, await self._place(job)) for job in mine],
            others_waiting=waiting,
            others_running=len(others) - waiting,
            other_members=len({job.user_id for job in others}),
        )

    async def _place(self, job: Job) -> QueuePlace | None:
        if job.state is JobState.RUNNING:
            return None
        return await self._jobs.queue_place(job.id)

    async def history(self, user_id: int, size: int, offset: int = 0) -> HistoryPage:
        """A page of the member's jobs, newest first."""
        jobs, total = await self._jobs.store.history(user_id, size, offset)
        return HistoryPage(jobs, offset, total)

    async def balance(self, user_id: int, role_ids: Iterable[int]) -> Balance:
        """Today's limits of the member (with their roles' overrides) less their usage."""
        assert self._quotas is not None, "balances need the quota store"
        status = await self._quotas.status(user_id, list(role_ids))
        limits, usage = status.limits, status.usage
        pricing = self._quotas.rules.pricing
        money_left: list[float] = []
        if limits.cost_per_day is not None:
            money_left.append(limits.cost_per_day - usage.cost)
        if limits.gpu_seconds_per_day is not None and pricing.price_per_gpu_hour > 0:
            money_left.append(pricing.cost(limits.gpu_seconds_per_day - usage.gpu_seconds))
        return Balance(
            images_left=(
                None
                if limits.images_per_day is None
                else max(0, limits.images_per_day - usage.images)
            ),
            gpu_seconds_left=(
                None
                if limits.gpu_seconds_per_day is None
                else max(0.0, limits.gpu_seconds_per_day - usage.gpu_seconds)
            ),
            credits=max(0.0, min(money_left)) if money_left else None,
            currency=status.currency,
            resets_at=status.resets_at,
        )
