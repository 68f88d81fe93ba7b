"""A claim reads the heads of the members' queues, and chooses as if it read them all."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.jobs.fair_queue import FairQueue
from bot.jobs.scheduler import (
    LANE_RANK,
    EngineView,
    Waiting,
    choose_batch,
    fair_order,
    for_engine,
    keeping_loaded,
    next_batch,
)
from bot.store.jobs import HEADS_READ, JobStore, QueuedRow, Requester
from bot.store.models import Lane
from tests.bot.test_scheduler import T0
from tests.stores import spec

MODELS = ("tiny", "other")
FAIR = FairQueue(timedelta(hours=1), 1.0)


def every_job_read(
    waiting: Sequence[Waiting],
    served: dict[int, float],
    engine: EngineView,
    max_images: int,
) -> list[Waiting]:
    """The batch as chosen before claims read only heads: from every waiting job."""
    order = for_engine(
        fair_order(waiting, served), engine.loaded_here, engine.loaded_on_idle_engines
    )
    order = keeping_loaded(order, engine.loaded_here, T0, engine.switch_after)
    return next_batch(order, max_images)


def heads_of(waiting: Sequence[Waiting], heads: int) -> tuple[list[Waiting], set[int]]:
    queues: dict[int, list[Waiting]] = {}
    for job in sorted(waiting, key=lambda j: (LANE_RANK[j.lane], j.queued_at, j.job_id)):
        queues.setdefault(job.user_id, []).append(job)
    cut = {user for user, queue in queues.items() if len(queue) > heads}
    return [job for queue in queues.values() for job in queue[:heads]], cut


@settings(max_examples=400, deadline=None)
@given(
    jobs=st.lists(
        st.tuples(
            st.integers(1, 4),  # member; member 1 usually has the long queue
            st.sampled_from(list(Lane)),
            st.sampled_from(MODELS),
            st.integers(1, 2),  # images
            st.sampled_from([0.5, 1.0, 3.0]),  # estimate
            st.integers(0, 600),  # seconds before T0 it was queued
        ),
        max_size=40,
    ),
    flood=st.integers(0, 30),
    served=st.dictionaries(st.integers(1, 4), st.sampled_from([0.0, 2.0, 10.0]), max_size=4),
    loaded=st.sets(st.sampled_from(MODELS)),
    elsewhere=st.sets(st.sampled_from(MODELS)),
    switch_after=st.integers(0, 600),
    heads=st.integers(1, 4),
    max_images=st.integers(1, 4),
)
def test_the_heads_choose_the_batch_every_waiting_job_would(
    jobs: list[tuple[int, Lane, str, int, float, int]],
    flood: int,
    served: dict[int, float],
    loaded: set[str],
    elsewhere: set[str],
    switch_after: int,
    heads: int,
    max_images: int,
) -> None:
    rows = jobs + [(1, Lane.NORMAL, "tiny", 1, 1.0, 300 - n) for n in range(flood)]
    waiting = [
        Waiting(
            f"j{n:03d}",
            user,
            model,
            lane,
            T0 - timedelta(seconds=age),
            images,
            estimate,
            (model, images % 2),  # some jobs of a model can share a request, some not
        )
        for n, (user, lane, model, images, estimate, age) in enumerate(rows)
    ]
    engine = EngineView(loaded, elsewhere, timedelta(seconds=switch_after))
    head, cut = heads_of(waiting, heads)
    batch = choose_batch(head, served, cut, engine, T0, max_images)
    if batch is None:  # the heads did not decide it: the store reads every row
        batch = choose_batch(waiting, served, set(), engine, T0, max_images)
    assert batch == every_job_read(waiting, served, engine, max_images)


ALICE = Requester(user_id=1, user_name="alice", channel_id=7)
OTHERS = [Requester(user_id=n, user_name=f"member{n}", channel_id=7) for n in (2, 3)]


async def test_a_claim_over_a_long_queue_reads_heads_and_takes_what_a_full_read_would(
    store: JobStore,
) -> None:
    rng = random.Random(20)
    others = {0: OTHERS[0], 20: OTHERS[0], 40: OTHERS[1]}  # three jobs among Alice's 57
    for n in range(60):
        requester = others.get(n, ALICE)
        await store.create(f"j{n:02d}", requester, spec(count=rng.choice([1, 2])), "tiny", [n])
    window = timedelta(hours=1)
    engine = EngineView({"tiny"}, set(), timedelta(minutes=5))
    read: list[int] = []

    def choose(rows: Sequence[QueuedRow], served: dict[int, float]) -> list[str] | None:
        read.append(len(rows))
        cut = {row.user_id for row in rows if row.more_behind}
        batch = choose_batch(FAIR.waiting(rows), served, cut, engine, T0, 4)
        return None if batch is None else [job.job_id for job in batch]

    while True:
        rows, served = await store.waiting_snapshot(window)
        expected = every_job_read(FAIR.waiting(rows), served, engine, 4)
        claimed = await store.claim("gpu", choose, window)
        assert [job.id for job in claimed] == [job.job_id for job in expected]
        if not claimed:
            break
    # While Alice's backlog was long, her queue was read only to its head.
    assert read[0] == HEADS_READ[0] + len(others)
