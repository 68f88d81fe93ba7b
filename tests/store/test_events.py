"""Job events as row data: a running job's progress on its row, announcements of ids on
PostgreSQL (heard again after the LISTEN connection drops), and the claim on delivering
a finished job (compare-and-set, audited)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import text

from bot.store.events import Announcement, EventKind, EventStore, RunningRow
from bot.store.jobs import Requester
from bot.store.models import Job, JobState
from tests.stores import Stores, spec

ALICE = Requester(user_id=501, user_name="alice", guild_id=1, channel_id=2)
LEASE = timedelta(minutes=2)


async def running_job(stores: Stores, job_id: str) -> Job:
    await stores.quotas.admit(job_id, ALICE, spec(), "tiny", [1])
    return await stores.jobs.transition(job_id, JobState.QUEUED, JobState.RUNNING, device="cpu")


async def finished_job(stores: Stores, job_id: str) -> Job:
    await running_job(stores, job_id)
    return await stores.jobs.transition(job_id, JobState.RUNNING, JobState.FAILED, "error")


async def claims_audited(stores: Stores, job_id: str) -> list[object]:
    trail = await stores.jobs.audit_trail(job_id)
    return [entry.params["by"] for entry in trail if entry.action == "job.delivery_claimed"]


async def test_a_running_jobs_progress_is_a_row_any_process_reads(stores: Stores) -> None:
    events = EventStore(stores.sessions)
    await running_job(stores, "job")
    await finished_job(stores, "ended")
    assert await events.running() == [RunningRow("job", None, None, None)]

    await events.record_progress("job", 2, 8, "images/job/job-preview.png")
    await events.record_progress("job", 3, 8, None)  # no new preview: the last one stays
    await events.record_progress("ended", 5, 8, None)  # an ended job is left as it ended

    assert await events.running() == [RunningRow("job", 3, 8, "images/job/job-preview.png")]
    ended = await stores.jobs.get("ended")
    assert ended.progress_step is None and ended.state is JobState.FAILED


async def test_exactly_one_front_door_claims_a_delivery_and_the_claim_is_audited(
    stores: Stores,
) -> None:
    events = EventStore(stores.sessions)
    await running_job(stores, "running")
    await finished_job(stores, "job")

    assert not await events.claim_delivery("running", "door-a", LEASE)  # nothing to deliver
    assert await events.claim_delivery("job", "door-a", LEASE)
    assert not await events.claim_delivery("job", "door-b", LEASE)
    assert await events.claim_delivery("job", "door-a", LEASE)  # its own retry
    assert await claims_audited(stores, "job") == ["door-a", "door-a"]

    assert await stores.jobs.mark_delivered("job", 77, "reply")
    assert not await events.claim_delivery("job", "door-a", LEASE)
    job = await stores.jobs.get("job")
    assert job.delivery_claimed_by == "door-a"


async def test_a_lapsed_claim_or_one_of_a_front_door_gone_is_taken_over(stores: Stores) -> None:
    events = EventStore(stores.sessions)
    await finished_job(stores, "lapsed")
    await finished_job(stores, "held")

    assert await events.claim_delivery("lapsed", "door-a", timedelta(0))
    assert await events.claim_delivery("lapsed", "door-b", LEASE)

    assert await events.claim_delivery("held", "door-a", LEASE)
    assert not await events.claim_delivery("held", "door-b", LEASE, take_from=["door-c"])
    assert await events.claim_delivery("held", "door-b", LEASE, take_from=["door-a"])
    assert await claims_audited(stores, "held") == ["door-a", "door-b"]


def test_an_announcement_carries_a_kind_and_an_id_only() -> None:
    announcement = Announcement(EventKind.FINISHED, "0123456789")
    assert announcement.payload() == "finished:0123456789"
    assert Announcement.read(announcement.payload()) == announcement
    assert Announcement.read("resized:0123456789") is None
    assert Announcement.read("finished:") is None


@pytest.mark.postgresql_only
async def test_announcements_are_heard_again_after_the_listen_connection_drops(
    stores: Stores,
) -> None:
    events = EventStore(stores.sessions)
    heard: asyncio.Queue[Announcement] = asyncio.Queue()
    connections: asyncio.Queue[None] = asyncio.Queue()

    async def connected() -> None:
        connections.put_nowait(None)

    listening = asyncio.create_task(events.listen(heard.put_nowait, connected))
    try:
        await asyncio.wait_for(connections.get(), 10)
        await events.announce(Announcement(EventKind.STARTED, "first"))
        assert await asyncio.wait_for(heard.get(), 10) == Announcement(EventKind.STARTED, "first")

        # The database ends the listening connection (a restart, a failover, a proxy).
        async with stores.sessions.begin() as session:
            ended = await session.scalar(
                text(
                    "select count(pg_terminate_backend(pid)) from pg_stat_activity"
                    " where query like 'LISTEN%' and pid <> pg_backend_pid()"
                )
            )
        assert ended == 1
        await asyncio.wait_for(connections.get(), 20)
        await events.announce(Announcement(EventKind.FINISHED, "second"))
        assert await asyncio.wait_for(heard.get(), 10) == Announcement(EventKind.FINISHED, "second")
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
