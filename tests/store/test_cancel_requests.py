"""Cancel as data: a running job's stop request is written on its row (compare-and-set,
audited in the same transaction) for whichever worker holds the job to read."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from bot.store.jobs import CancelRequest, IllegalTransition, Requester
from bot.store.models import Job, JobState, Reservation, UsageEntry, utcnow
from tests.databases import Database, Kind
from tests.stores import Stores, service_on, spec

ALICE = Requester(user_id=501, user_name="alice", guild_id=1, channel_id=2)
ADMIN_ID = 9


async def running_job(stores: Stores, job_id: str) -> Job:
    await stores.quotas.admit(job_id, ALICE, spec(), "tiny", [1])
    return await stores.jobs.transition(job_id, JobState.QUEUED, JobState.RUNNING, device="cpu")


async def requests_audited(
    stores: Stores, job_id: str
) -> list[tuple[str, int | None, dict[str, Any]]]:
    return [
        (entry.outcome, entry.actor_id, entry.params)
        for entry in await stores.jobs.audit_trail(job_id)
        if entry.action == "job.cancel_requested"
    ]


async def test_a_cancel_request_is_recorded_once_with_its_audit_entry(stores: Stores) -> None:
    await running_job(stores, "job")
    await running_job(stores, "other")

    assert await stores.jobs.request_cancel("job", ADMIN_ID, refund=True)
    # Asked again (by its member this time): nothing is written, the first request stands.
    assert not await stores.jobs.request_cancel("job", ALICE.user_id, refund=False)

    requested = await stores.jobs.cancel_requests(["job", "other", "unknown"])
    assert requested == {"job": CancelRequest(ADMIN_ID, refund=True)}
    assert await requests_audited(stores, "job") == [
        ("ok", ADMIN_ID, {"device": "cpu", "refund": True})
    ]
    job = await stores.jobs.get("job")
    assert job.state is JobState.RUNNING and job.cancel_requested_at is not None


async def test_the_audit_entry_names_the_member_when_the_bot_asked(stores: Stores) -> None:
    await running_job(stores, "job")
    assert await stores.jobs.request_cancel("job", None, refund=False)
    assert await requests_audited(stores, "job") == [
        ("ok", ALICE.user_id, {"device": "cpu", "refund": False})
    ]
    assert await stores.jobs.cancel_requests(["job"]) == {"job": CancelRequest(None, refund=False)}


async def test_a_cancel_request_for_a_job_not_running_is_refused_and_nothing_is_written(
    stores: Stores,
) -> None:
    await stores.quotas.admit("waiting", ALICE, spec(), "tiny", [1])
    await stores.run_job("done", ALICE, 2.0)

    for job_id, state in (("waiting", JobState.QUEUED), ("done", JobState.SUCCEEDED)):
        with pytest.raises(IllegalTransition) as refused:
            await stores.jobs.request_cancel(job_id, ALICE.user_id, refund=False)
        assert refused.value.found is state
        assert await requests_audited(stores, job_id) == []
        job = await stores.jobs.get(job_id)
        assert (job.state, job.cancel_requested_at) == (state, None)
    assert await stores.jobs.cancel_requests(["waiting", "done"]) == {}


async def test_a_cancel_through_the_service_is_a_request_on_a_running_job_and_refused_once_ended(
    stores: Stores,
) -> None:
    service = service_on(stores)  # its workers never start: nothing but the store is asked
    await running_job(stores, "job")
    await stores.run_job("done", ALICE, 2.0)

    assert await service.cancel("job", ADMIN_ID)
    assert await service.cancel("job", ALICE.user_id)  # asked already: it still stops
    assert not await service.cancel("done", ALICE.user_id)

    assert await stores.jobs.cancel_requests(["job", "done"]) == {
        "job": CancelRequest(ADMIN_ID, refund=False)
    }
    assert [len(await requests_audited(stores, j)) for j in ("job", "done")] == [1, 0]
    assert (await stores.jobs.get("done")).state is JobState.SUCCEEDED


async def test_a_job_asked_to_stop_whose_worker_died_is_cancelled_and_refunded_by_the_reaper(
    stores: Stores,
) -> None:
    await running_job(stores, "asked")
    await running_job(stores, "other")
    assert await stores.jobs.request_cancel("asked", ADMIN_ID, refund=False)

    async with stores.sessions.begin() as session:  # its worker died: the lease ran out
        await session.execute(
            update(Job).values(claimed_by="gone:1:a", lease_until=utcnow() - timedelta(seconds=1))
        )

    ended = {job.id: job for job in await stores.jobs.reap_expired()}

    assert (ended["asked"].state, ended["other"].state) == (JobState.CANCELLED, JobState.QUEUED)
    assert ended["asked"].error == "cancelled (its worker gone:1:a stopped renewing its claim)"
    trail = [(e.action, e.outcome, e.actor_id) for e in await stores.jobs.audit_trail("asked")]
    assert trail[-2:] == [
        ("job.cancelled", "cancelled", ADMIN_ID),
        ("quota.refund", "ok", ALICE.user_id),
    ]
    assert await stores.count(Reservation, Reservation.job_id == "asked") == 0
    assert await stores.count(UsageEntry) == 0


async def test_a_cancel_request_is_heard_as_it_commits_on_postgresql(
    stores: Stores, database: Database
) -> None:
    await running_job(stores, "job")
    heard: asyncio.Queue[str] = asyncio.Queue()
    async with stores.jobs.hearing_cancels(heard.put_nowait) as listening:
        # SQLite has one process, whose pool intake wakes directly: nothing to hear.
        assert listening is (database.kind is Kind.POSTGRESQL)
        assert await stores.jobs.request_cancel("job", ADMIN_ID, refund=False)
        assert not await stores.jobs.request_cancel("job", ADMIN_ID, refund=False)
        if listening:
            async with asyncio.timeout(10):
                assert await heard.get() == "job"  # the job's id only
            await asyncio.sleep(0.5)
        assert heard.empty()  # the repeat, which wrote nothing, announced nothing
