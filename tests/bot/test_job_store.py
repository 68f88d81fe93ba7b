"""The job store against a real migrated SQLite file."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import BindParameter, event

from bot.store.jobs import IllegalTransition, JobStore, QueuedRow, Requester
from bot.store.models import JobState, UTCDateTime
from tests.stores import output, spec


async def test_a_new_members_simultaneous_first_jobs_are_both_recorded(store: JobStore) -> None:
    requester = Requester(user_id=42, user_name="newcomer", channel_id=7)
    jobs = await asyncio.gather(
        *(store.create(f"job{n}", requester, spec(), "tiny", [n]) for n in range(5))
    )
    assert sorted(job.id for job in jobs) == [f"job{n}" for n in range(5)]
    for n in range(5):
        stored = await store.get(f"job{n}")
        assert (stored.user_id, stored.state) == (42, JobState.QUEUED)
        trail = await store.audit_trail(f"job{n}")
        assert [entry.action for entry in trail] == ["job.queued"]


ALICE = Requester(user_id=1, user_name="alice", channel_id=7)
BOB = Requester(user_id=2, user_name="bob", channel_id=7)


def first_waiting(rows: Sequence[QueuedRow], served: dict[int, float]) -> list[str]:
    return [rows[0].job_id]


async def test_a_transition_from_an_unexpected_state_is_refused_and_nothing_written(
    store: JobStore,
) -> None:
    await store.create("job", ALICE, spec(), "tiny", [1])
    await store.transition("job", JobState.QUEUED, JobState.RUNNING)
    await store.succeed("job", 1.0, [])
    # A late error must not flip a succeeded job to failed.
    with pytest.raises(IllegalTransition):
        await store.transition("job", JobState.RUNNING, JobState.FAILED, error="late")
    with pytest.raises(IllegalTransition):
        await store.transition("job", JobState.SUCCEEDED, JobState.QUEUED)
    job = await store.get("job")
    assert (job.state, job.error) == (JobState.SUCCEEDED, None)
    actions = [entry.action for entry in await store.audit_trail("job")]
    assert actions == ["job.queued", "job.running", "job.succeeded"]


async def test_succeed_returns_the_stored_job_with_its_outputs(store: JobStore) -> None:
    await store.create("job", ALICE, spec(count=2), "tiny", [1, 2])
    await store.transition("job", JobState.QUEUED, JobState.RUNNING)
    returned = await store.succeed("job", 1.5, [output("job", 0), output("job", 1)])
    stored = await store.get("job")
    assert (returned.state, returned.gpu_seconds, returned.finished_at) == (
        stored.state,
        stored.gpu_seconds,
        stored.finished_at,
    )
    assert (
        [o.path for o in returned.outputs]
        == [o.path for o in stored.outputs]
        == [
            "images/job/0.png",
            "images/job/1.png",
        ]
    )


async def test_concurrent_claims_never_take_the_same_job_twice(store: JobStore) -> None:
    for n in range(6):
        await store.create(f"job{n}", ALICE if n % 2 else BOB, spec(), "tiny", [n])
    window = timedelta(hours=1)
    claimed = await asyncio.gather(
        *(store.claim(f"gpu{n}", first_waiting, window) for n in range(8))
    )
    ids = [job.id for batch in claimed for job in batch]
    assert sorted(ids) == [f"job{n}" for n in range(6)]
    for job_id in ids:
        job = await store.get(job_id)
        assert (job.state, job.attempts) == (JobState.RUNNING, 1)


async def test_the_jobs_of_one_claim_share_a_batch_id_named_in_their_audit(
    store: JobStore,
) -> None:
    for n in range(3):
        await store.create(f"job{n}", ALICE, spec(), "tiny", [n])
    window = timedelta(hours=1)
    pair = await store.claim("gpu", lambda rows, served: [row.job_id for row in rows[:2]], window)
    (alone,) = await store.claim("gpu", first_waiting, window)
    batch = {job.batch_id for job in pair}
    assert len(batch) == 1 and None not in batch and alone.batch_id not in batch
    for job in [*pair, alone]:
        (_, running) = await store.audit_trail(job.id)
        assert running.params["batch"] == job.batch_id == (await store.get(job.id)).batch_id


async def test_a_claim_reads_recent_gpu_time_only_when_two_members_wait(
    store: JobStore,
) -> None:
    window = timedelta(hours=1)
    await store.create("running", ALICE, spec(), "tiny", [1])
    await store.claim("gpu", first_waiting, window)  # Alice has GPU time now
    seen: list[dict[int, float]] = []

    def chooser(rows: Sequence[QueuedRow], served: dict[int, float]) -> list[str]:
        seen.append(served)
        return [rows[0].job_id]

    await store.create("alone", ALICE, spec(), "tiny", [2])
    await store.claim("gpu", chooser, window)
    await store.create("alice", ALICE, spec(), "tiny", [3])
    await store.create("bob", BOB, spec(), "tiny", [4])
    await store.claim("gpu", chooser, window)
    # Alone in the queue, Alice's time orders nobody; beside Bob it does.
    assert seen == [{}, {ALICE.user_id: 2.0}]


async def test_an_http_job_is_delivered_as_it_finishes_with_its_time_bound_as_utc(
    store: JobStore,
) -> None:
    binds: list[BindParameter[Any]] = []

    def record(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        if statement.startswith("UPDATE jobs"):
            binds.extend(context.compiled.binds.values())

    api = dataclasses.replace(ALICE, client="http")
    await store.create("job", api, spec(), "tiny", [1])
    await store.claim("gpu", first_waiting, timedelta(hours=1))
    engine = store._sessions.kw["bind"].sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        job = await store.succeed("job", 1.0, [])
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert job.delivered_at is not None and job.delivered_at == job.finished_at
    # Written as UTC on every database (PostgreSQL would shift a plain timestamp by its
    # session's time zone).
    times = [bind for bind in binds if isinstance(bind.value, datetime)]
    assert times and all(isinstance(bind.type, UTCDateTime) for bind in times)


async def test_a_run_cut_off_twice_is_failed_not_retried(store: JobStore) -> None:
    await store.create("job", ALICE, spec(), "tiny", [1])
    window = timedelta(hours=1)
    # Claims whose worker died at once: their leases have run out when the reaper looks.
    await store.claim("gpu", first_waiting, window, lease=timedelta(0))
    (requeued,) = await store.reap_expired()
    assert requeued.state is JobState.QUEUED
    await store.claim("gpu", first_waiting, window, lease=timedelta(0))
    (failed,) = await store.reap_expired()
    assert failed.state is JobState.FAILED
    assert "2 times; not retried" in (failed.error or "")


async def test_a_job_is_marked_delivered_only_once(store: JobStore) -> None:
    await store.create("job", ALICE, spec(), "tiny", [1])
    await store.transition("job", JobState.QUEUED, JobState.CANCELLED, "cancelled")
    assert [job.id for job in await store.undelivered()] == ["job"]
    assert await store.mark_delivered("job", 123, "reply")
    assert not await store.mark_delivered("job", 456, "channel")
    assert await store.undelivered() == []
    assert (await store.get("job")).message_id == 123
    delivered = [e for e in await store.audit_trail("job") if e.action == "job.delivered"]
    assert [(e.actor_id, e.channel_id, e.params) for e in delivered] == [
        (ALICE.user_id, ALICE.channel_id, {"how": "reply", "message_id": 123, "state": "cancelled"})
    ]
