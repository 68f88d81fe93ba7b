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


def fair_order(
    waiting: Sequence[Waiting], served: Mapping[int, float], cut: Set[int] = frozenset()
) -> list[Waiting]:
    """Every waiting job in the order it would run, as if each ran alone.

    `served` is each member's recent GPU seconds (finished jobs in the fair-share
    window plus running jobs' estimates); members not in it have had none.

    `cut` are members whose queues were read only up to their first few jobs (a claim
    reads the heads of the queues, bot.store.jobs): the order then ends after such a
    member's last given job, as what follows would depend on the jobs not read. So it
    is always the start of the order of every waiting job.
    """
    queues: dict[int, list[Waiting]] = {}
    for job in sorted(waiting, key=_own_order, reverse=True):
        queues.setdefault(job.user_id, []).append(job)  # each member's next job last
    if cut - queues.keys():
        return []  # a cut member none of whose jobs were given could go first
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
        if not queues[user] and user in cut:
            break
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
    return keeping_loaded_of(order, order, loaded_here, now, switch_after, complete=True) or []


def keeping_loaded_of(
    order: Sequence[Waiting],
    known: Sequence[Waiting],
    loaded_here: Set[str],
    now: datetime,
    switch_after: timedelta,
    *,
    complete: bool,
) -> list[Waiting] | None:
    """`keeping_loaded` of `order`, the start of the fair order, when the models waiting
    and their oldest jobs are judged from `known` (every job read, of the models this
    engine takes). Unless `known` is `complete` (every waiting job), a model's oldest
    job may not have been read: None when that could change which jobs are kept."""
    oldest: dict[str, datetime] = {}
    for job in known:
        oldest[job.model] = min(oldest.get(job.model, job.queued_at), job.queued_at)
    if not oldest.keys() & loaded_here:
        return list(order) if complete or not loaded_here else None

    def kept(model: str) -> bool:
        return model in loaded_here or now - oldest[model] >= switch_after

    if not complete and not all(kept(job.model) for job in order):
        return None  # a passed-over model's oldest job may be older than those read
    return [job for job in order if kept(job.model)]


def next_batch(order: Sequence[Waiting], max_images: int) -> list[Waiting]:
    """The jobs of the next engine request: the first job of `order` and the jobs after
    it that can share its pipeline call, up to `max_images` images.

    Only jobs of the head's lane join, and a job joins only if it overtakes no more
    incompatible jobs than the batch already holds, so no job jumps the fair order
    by more than the batch it joins.
    """
    return _batch(order, max_images)[0]


def settled_batch(order: Sequence[Waiting], max_images: int) -> list[Waiting] | None:
    """`next_batch` of `order`, the start of a longer fair order, when that start already
    decides it; None when a job after it could still join (or `order` is empty)."""
    batch, settled = _batch(order, max_images)
    return batch if settled else None


def _batch(order: Sequence[Waiting], max_images: int) -> tuple[list[Waiting], bool]:
    """The next batch, and whether jobs after `order` could not have joined it."""
    if not order:
        return [], False
    head = order[0]
    batch, images, overtaken = [head], head.images, 0
    for job in order[1:]:
        if images >= max_images:
            break
        fits = images + job.images <= max_images
        if job.batch_key == head.batch_key and job.lane is head.lane and fits:
            batch.append(job)
            images += job.images
        else:
            overtaken += 1
            if overtaken > len(batch):
                break  # no later job may overtake this many: the batch is complete
    return batch, images >= max_images or overtaken > len(batch)


@dataclass(frozen=True)
class EngineView:
    """What an engine's claim weighs besides the queue: the models it holds, those that
    other idle engines hold, and how long a model's jobs wait before it switches."""

    loaded_here: Set[str]
    loaded_on_idle_engines: Set[str]
    switch_after: timedelta


def choose_batch(
    waiting: Sequence[Waiting],
    served: Mapping[int, float],
    cut: Set[int],
    engine: EngineView,
    now: datetime,
    max_images: int,
) -> list[Waiting] | None:
    """The next batch for `engine`: the fair order, as this engine takes it, batched.

    `waiting` may hold only the heads of the `cut` members' queues (fair_order): the
    batch is then the one every waiting job would give, or None when the heads do not
    decide it (then ask again with every waiting job and no `cut`)."""
    loaded, elsewhere = engine.loaded_here, engine.loaded_on_idle_engines
    order = for_engine(fair_order(waiting, served, cut), loaded, elsewhere)
    known = for_engine(waiting, loaded, elsewhere)
    kept = keeping_loaded_of(order, known, loaded, now, engine.switch_after, complete=not cut)
    if not cut:
        return next_batch(kept or [], max_images)
    return None if kept is None else settled_batch(kept, max_images)
