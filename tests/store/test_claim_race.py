"""Workers racing for one queue (bot.store.jobs.JobStore.claim): a job another worker
took between a claim's read and its compare-and-set is set aside, and the claim
chooses again from the rows it read, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

import bot.store.jobs as jobs_module
from bot.store.jobs import JobStore, QueuedRow, Requester
from bot.store.models import JobState
from tests.stores import Stores, another_process, spec

WINDOW = timedelta(hours=1)
MEMBERS = [Requester(user, f"member{user}") for user in (1, 2, 3)]


def oldest(rows: Sequence[QueuedRow], served: dict[int, float]) -> list[str]:
    return [min(rows, key=lambda row: (row.queued_at, row.job_id)).job_id]


def claim_elsewhere(stores: Stores, job_id: str) -> None:
    """Another worker claims `job_id` now, on a thread and event loop of its own, while
    the caller's claim waits between its read and its compare-and-set."""

    async def claim() -> None:
        async with another_process(stores) as other:
            (taken,) = await other.claim("gpu9", lambda rows, served: [job_id], WINDOW)
            assert taken.id == job_id

    thread = threading.Thread(target=asyncio.run, args=(claim(),))
    thread.start()
    thread.join()


async def test_a_job_taken_meanwhile_is_set_aside_without_reading_the_queue_again(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs_module, "_spread", lambda rivals: 0)  # no random pass-over
    for n in range(6):
        await stores.jobs.create(f"job{n}", MEMBERS[n % 3], spec(), "tiny", [n])
    asked: list[tuple[list[str], dict[int, float]]] = []

    def chooser(rows: Sequence[QueuedRow], served: dict[int, float]) -> list[str]:
        asked.append((sorted(row.job_id for row in rows), dict(served)))
        chosen = oldest(rows, served)
        if len(asked) == 1:
            claim_elsewhere(stores, chosen[0])  # the race, lost by this claim
        return chosen

    async with another_process(stores) as worker:
        reads: list[str] = []
        sync_engine = worker._sessions.kw["bind"].sync_engine

        def record(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
            if statement.lstrip().upper().startswith(("SELECT", "WITH")):
                reads.append(statement)

        event.listen(sync_engine, "before_cursor_execute", record)
        (claimed,) = await worker.claim("gpu1", chooser, WINDOW)

    # Asked twice: the second time without job0 (the other worker's now), its member
    # charged the running job's estimate as a new read would; one read of the queue.
    assert claimed.id == "job1" and claimed.claimed_by == worker.worker_id
    (first_rows, first_served), (second_rows, second_served) = asked
    assert first_rows == [f"job{n}" for n in range(6)]
    assert second_rows == [f"job{n}" for n in range(1, 6)]
    assert second_served.get(1, 0.0) == first_served.get(1, 0.0) + 1.0
    assert sum("RECURSIVE" in statement for statement in reads) == 1
    taken = await stores.jobs.get("job0")
    assert (taken.state, taken.device, taken.attempts) == (JobState.RUNNING, "gpu9", 1)
    trail = [entry.action for entry in await stores.jobs.audit_trail("job0")]
    assert trail == ["job.queued", "job.running"]


async def test_workers_racing_for_one_queue_take_every_job_exactly_once(stores: Stores) -> None:
    jobs = 40
    for n in range(jobs):
        await stores.jobs.create(f"job{n:02d}", MEMBERS[n % 3], spec(), "tiny", [n])

    async def drain(worker: JobStore, device: str) -> list[str]:
        taken: list[str] = []
        while batch := await worker.claim(device, oldest, WINDOW):
            taken += [job.id for job in batch]
        return taken

    async with (
        another_process(stores) as one,
        another_process(stores) as two,
        another_process(stores) as three,
    ):
        taken = await asyncio.gather(drain(one, "gpu1"), drain(two, "gpu2"), drain(three, "gpu3"))
    every = [job_id for worker in taken for job_id in worker]
    assert sorted(every) == [f"job{n:02d}" for n in range(jobs)]
    for job_id in every:
        job = await stores.jobs.get(job_id)
        assert (job.state, job.attempts) == (JobState.RUNNING, 1)


def met(worker: JobStore, rivals: int) -> None:
    for _ in range(rivals):
        worker._rivals.met()  # a race lost


async def test_a_worker_that_met_rivals_passes_over_a_few_fair_choices_but_still_claims(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs_module, "_spread", lambda rivals: 2 * rivals)  # the most
    for n in range(6):
        await stores.jobs.create(f"job{n}", MEMBERS[n % 3], spec(), "tiny", [n])
    async with another_process(stores) as worker:
        met(worker, 2)
        (first,) = await worker.claim("gpu1", oldest, WINDOW)
        # Four choices passed over (the oldest four), one rival fewer after a won claim.
        assert first.id == "job4" and worker._rivals.lately() == 1
        (second,) = await worker.claim("gpu1", oldest, WINDOW)
        # Two passed over of job0, job1, job2, job3, job5.
        assert second.id == "job2" and worker._rivals.lately() == 0
        (third,) = await worker.claim("gpu1", oldest, WINDOW)
        assert third.id == "job0"  # no rivals: the fair order as it is
        met(worker, 3)
        (fourth,) = await worker.claim("gpu1", oldest, WINDOW)
        # Six to pass over, three waiting (job1, job3, job5): never past the last one.
        assert fourth.id == "job5"
    states = [(await stores.jobs.get(f"job{n}")).state for n in range(6)]
    assert states.count(JobState.RUNNING) == 4


async def test_a_pass_over_stops_before_a_members_last_row_read(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Member 1 queued four jobs, then member 2 one: a claim reads member 1's first two
    # (the second marked as having more behind it) and member 2's job.
    monkeypatch.setattr(jobs_module, "_spread", lambda rivals: 2 * rivals)
    for n in range(4):
        await stores.jobs.create(f"a{n}", MEMBERS[0], spec(), "tiny", [n])
    await stores.jobs.create("b0", MEMBERS[1], spec(), "tiny", [9])
    async with another_process(stores) as worker:
        met(worker, 3)
        (claimed,) = await worker.claim("gpu1", oldest, WINDOW)
    # Passing over a1 as well would leave b0 as if member 1 had no more (a2 and a3 are
    # older): the pass-over stops at a1.
    assert claimed.id == "a1"


async def test_a_pass_over_stops_at_the_last_choice_that_takes_a_job(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs_module, "_spread", lambda rivals: 2 * rivals)
    await stores.jobs.create("mine", MEMBERS[0], spec(), "tiny", [1])
    for n in range(3):
        await stores.jobs.create(f"other{n}", MEMBERS[1], spec(), "tiny", [n])

    def members_first_only(rows: Sequence[QueuedRow], served: dict[int, float]) -> list[str]:
        return [row.job_id for row in rows if row.user_id == MEMBERS[0].user_id][:1]

    async with another_process(stores) as worker:
        met(worker, 3)
        (claimed,) = await worker.claim("gpu1", members_first_only, WINDOW)
    assert claimed.id == "mine"  # the rows after it give nothing this worker takes


def test_rivals_are_forgotten_after_a_while_without_a_race_lost() -> None:
    rivals = jobs_module._Rivals()
    assert rivals.lately() == 0
    for _ in range(5):
        rivals.met()
    assert rivals.lately() == jobs_module.MAX_RIVALS
    rivals.won()
    assert rivals.lately() == jobs_module.MAX_RIVALS - 1
    rivals.last_met -= jobs_module.RIVALS_FORGOTTEN
    assert rivals.lately() == 0
    rivals.met()
    assert rivals.lately() == 1  # counted afresh


async def test_a_claim_that_meets_a_deadlock_claims_again(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    await stores.jobs.create("job0", MEMBERS[0], spec(), "tiny", [0])
    move = JobStore._move_claimed
    tries: list[int] = []

    async def deadlocked_once(self: JobStore, *args: Any) -> dict[str, Any]:
        tries.append(1)
        if len(tries) == 1:  # as PostgreSQL rolls back one side of a deadlock
            raise OperationalError("UPDATE jobs ...", {}, Exception("deadlock detected"))
        return await move(self, *args)

    monkeypatch.setattr(JobStore, "_move_claimed", deadlocked_once)
    (claimed,) = await stores.jobs.claim("gpu1", oldest, WINDOW)
    assert claimed.id == "job0" and len(tries) == 2
    assert [entry.action for entry in await stores.jobs.audit_trail("job0")] == [
        "job.queued",
        "job.running",
    ]
