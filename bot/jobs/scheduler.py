"""Which waiting jobs run next: lanes, then fair share of GPU time, then age; and batches.

Pure functions of the waiting rows and of each member's recent GPU time, so the
rules members rely on are tested on their own (tests/bot/test_scheduler.py):

- Lanes first: priority (members with a priority role), then normal, then relax
  (over quota); a relax job runs only when no other job waits.
- Within a lane, the member who has had the least GPU time goes next (a job
  that starts counts its estimate at once), ties broken by the age of the
  member's oldest waiting job. So however many jobs member A queues, member
  B's first job waits behind at most one job of A, and over a long backlog
  every member with waiting jobs gets about the same GPU seconds.
- A member's own jobs run in the order they were queued.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..store.models import Lane

LANE_RANK = {Lane.PRIORITY: 0, Lane.NORMAL: 1, Lane.RELAX: 2}


@dataclass(frozen=True)
class Waiting:
    """One queued job as the scheduler sees it."""

    job_id: str
    user_id: int
    model: str
    lane: Lane
    queued_at: datetime
    images: int
    # Estimated GPU seconds, counted against the member as soon as the job starts.
    estimate: float
    # Jobs with equal keys can share one engine request (bot.jobs.spec.batch_key).
    batch_key: Hashable


def _own_order(job: Waiting) -> tuple[int, datetime, str]:
    return LANE_RANK[job.lane], job.queued_at, job.job_id


def fair_order(waiting: Sequence[Waiting], served: Mapping[int, float]) -> list[Waiting]:
    """Every waiting job in the order it would run, as if each ran alone.

    `served` is each member's recent GPU seconds (finished jobs in the fair-share
    window plus running jobs' estimates); members not in it have had none.
    """
    queues: dict[int, list[Waiting]] = {}
    for job in sorted(waiting, key=_own_order, reverse=True):
        queues.setdefault(job.user_id, []).append(job)  # each member's next job last
    received = {user: served.get(user, 0.0) for user in queues}

    def entry(user: int) -> tuple[int, float, datetime, str, int]:
        head = queues[user][-1]
        return LANE_RANK[head.lane], received[user], head.queued_at, head.job_id, user

    heap = [entry(user) for user in queues]
    heapq.heapify(heap)
    order: list[Waiting] = []
    while heap:
        user = heapq.heappop(heap)[-1]
        job = queues[user].pop()
        order.append(job)
        received[user] += job.estimate
        if queues[user]:
            heapq.heappush(heap, entry(user))
    return order


def for_engine(
    order: Sequence[Waiting], loaded_here: Set[str], loaded_on_idle_engines: Set[str]
) -> list[Waiting]:
    """The fair order as one engine should take it: a job whose model another idle
    engine already holds (and this one does not) is left to that engine, so a model is
    not loaded twice while a free engine that has it waits. Order is kept otherwise."""
    return [
        job for job in order if job.model in loaded_here or job.model not in loaded_on_idle_engines
    ]


def keeping_loaded(
    order: Sequence[Waiting], loaded_here: Set[str], now: datetime, switch_after: timedelta
) -> list[Waiting]:
    """The fair order as an engine that holds `loaded_here` takes it: while jobs of those
    models wait, another model's jobs are passed over (a model switch costs a load)
    unless that model's oldest job has waited `switch_after` or longer. With nothing of
    its models waiting, an engine takes any job rather than stand idle. Order is kept."""
    if not any(job.model in loaded_here for job in order):
        return list(order)
    oldest: dict[str, datetime] = {}
    for job in order:
        oldest[job.model] = min(oldest.get(job.model, job.queued_at), job.queued_at)
    return [
        job for job in order if job.model in loaded_here or now - oldest[job.model] >= switch_after
    ]


def next_batch(order: Sequence[Waiting], max_images: int) -> list[Waiting]:
    """The jobs of the next engine request: the first job of `order` and the jobs after
    it that can share its pipeline call, up to `max_images` images.

    Only jobs of the head's lane join, and a job joins only if it overtakes no more
    incompatible jobs than the batch already holds, so no job jumps the fair order
    by more than the batch it joins.
    """
    if not order:
        return []
    head = order[0]
    batch, images, overtaken = [head], head.images, 0
    for job in order[1:]:
        if images >= max_images:
            break
        fits = images + job.images <= max_images
        if job.batch_key == head.batch_key and job.lane is head.lane and fits:
            if overtaken > len(batch):
                break
            batch.append(job)
            images += job.images
        else:
            overtaken += 1
    return batch
