"""The fair order and batching rules, as pure functions of the waiting jobs."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.jobs.scheduler import Waiting, fair_order, for_engine, next_batch
from bot.store.models import Lane

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def job(
    n: int,
    user: int,
    lane: Lane = Lane.NORMAL,
    estimate: float = 1.0,
    key: str = "sd",
    images: int = 1,
) -> Waiting:
    return Waiting(f"j{n:04d}", user, key, lane, T0 + timedelta(seconds=n), images, estimate, key)


def users_in(order: list[Waiting]) -> list[int]:
    return [w.user_id for w in order]


def test_second_members_first_job_runs_after_at_most_one_of_the_flooders() -> None:
    waiting = [job(n, user=1) for n in range(10)] + [job(10, user=2)]
    assert users_in(fair_order(waiting, {}))[:2] == [1, 2]


def test_a_member_with_running_work_yields_to_one_without() -> None:
    waiting = [job(n, user=1) for n in range(5)] + [job(5, user=2)]
    assert users_in(fair_order(waiting, {1: 3.0}))[0] == 2


def test_lanes_come_before_fair_share() -> None:
    waiting = [job(0, 1, Lane.RELAX), job(1, 2, Lane.NORMAL), job(2, 3, Lane.PRIORITY)]
    assert [w.lane for w in fair_order(waiting, {3: 100.0})] == [
        Lane.PRIORITY,
        Lane.NORMAL,
        Lane.RELAX,
    ]


def test_a_members_jobs_keep_their_own_order() -> None:
    waiting = [job(3, 1), job(1, 1), job(2, 1)]
    assert [w.job_id for w in fair_order(waiting, {})] == ["j0001", "j0002", "j0003"]


members = st.integers(min_value=1, max_value=6)
waiting_jobs = st.lists(
    st.tuples(members, st.sampled_from(list(Lane)), st.floats(0.2, 5.0)), min_size=1, max_size=60
)


@given(waiting_jobs, st.integers(1, 6))
def test_however_many_jobs_a_waits_b_waits_behind_at_most_one_of_them(
    jobs: list[tuple[int, Lane, float]], flood: int
) -> None:
    waiting = [job(n, user, Lane.NORMAL, est) for n, (user, _, est) in enumerate(jobs)]
    newcomer = 99
    waiting += [job(len(jobs) + i, newcomer) for i in range(flood)]
    order = users_in(fair_order(waiting, {}))
    first = order.index(newcomer)
    ahead = order[:first]
    assert all(ahead.count(user) <= 1 for user in set(ahead))


@given(waiting_jobs)
def test_a_relax_job_runs_only_when_no_other_job_waits(jobs: list[tuple[int, Lane, float]]) -> None:
    waiting = [job(n, user, lane, est) for n, (user, lane, est) in enumerate(jobs)]
    lanes = [w.lane for w in fair_order(waiting, {})]
    if Lane.RELAX in lanes:
        assert all(lane is Lane.RELAX for lane in lanes[lanes.index(Lane.RELAX) :])


@settings(max_examples=20, deadline=None)
@given(st.lists(st.floats(0.5, 4.0), min_size=2, max_size=4), st.integers(0, 2**32))
def test_over_a_long_backlog_members_get_equal_gpu_seconds_within_ten_percent(
    sizes: list[float], seed: int
) -> None:
    """Each member queues 100 jobs of their own typical size; the GPU runs them one at a
    time, re-deciding after each (as the worker does), while every member still waits."""
    rng = random.Random(seed)
    backlog = [
        job(n * len(sizes) + user, user, estimate=size * rng.uniform(0.5, 1.5))
        for n in range(100)
        for user, size in enumerate(sizes)
    ]
    served: dict[int, float] = {}
    while all(any(w.user_id == user for w in backlog) for user in range(len(sizes))):
        chosen = fair_order(backlog, served)[0]
        backlog.remove(chosen)
        served[chosen.user_id] = served.get(chosen.user_id, 0.0) + chosen.estimate
    share = sum(served.values()) / len(sizes)
    assert all(abs(seconds - share) <= 0.1 * share for seconds in served.values())


def test_compatible_jobs_of_several_members_share_a_batch() -> None:
    order = fair_order([job(0, 1), job(1, 1), job(2, 2), job(3, 2)], {})
    assert [w.job_id for w in next_batch(order, max_images=8)] == [
        "j0000",
        "j0002",
        "j0001",
        "j0003",
    ]


def test_a_batch_holds_at_most_max_images() -> None:
    order = [job(0, 1, images=3), job(1, 2, images=3), job(2, 3, images=1)]
    assert [w.job_id for w in next_batch(order, max_images=4)] == ["j0000", "j0002"]


def test_one_image_batches_on_cpu() -> None:
    assert len(next_batch([job(0, 1), job(1, 2)], max_images=1)) == 1


def test_incompatible_and_relax_jobs_stay_out_of_the_batch() -> None:
    order = [job(0, 1), job(1, 2, key="xl"), job(2, 4), job(3, 3, lane=Lane.RELAX)]
    assert [w.job_id for w in next_batch(order, max_images=8)] == ["j0000", "j0002"]


def test_a_job_far_behind_in_the_fair_order_does_not_join() -> None:
    order = [job(0, 1), job(1, 2, key="xl"), job(2, 3, key="xl"), job(3, 4)]
    assert [w.job_id for w in next_batch(order, max_images=8)] == ["j0000"]


@given(
    st.lists(st.tuples(members, st.sampled_from(["a", "b"]), st.integers(1, 4)), min_size=1),
    st.integers(1, 8),
)
def test_no_job_jumps_the_fair_order_by_more_than_its_batch(
    jobs: list[tuple[int, str, int]], max_images: int
) -> None:
    order = fair_order([job(n, u, key=k, images=i) for n, (u, k, i) in enumerate(jobs)], {})
    batch = next_batch(order, max_images)
    assert batch[0] == order[0]
    assert sum(w.images for w in batch) <= max(max_images, batch[0].images)
    assert len({w.batch_key for w in batch}) == 1
    for joined, member in enumerate(batch):
        overtaken = order.index(member) - joined
        assert overtaken <= len(batch)


def test_a_free_engine_that_has_the_model_loaded_gets_its_jobs() -> None:
    order = fair_order([job(0, 1, key="xl"), job(1, 2, key="sd")], {})
    # Engine B holds "xl" and is idle: engine A (holding "sd") leaves the xl job to it.
    assert [w.job_id for w in for_engine(order, {"sd"}, {"xl"})] == ["j0001"]
    assert [w.job_id for w in for_engine(order, {"xl"}, {"sd"})] == ["j0000"]
    # With no idle engine holding it, any engine takes the job.
    assert [w.job_id for w in for_engine(order, set(), set())] == ["j0000", "j0001"]
