"""The usage ledger: reservations are settled at the measured amount or refunded."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import pytest
from sqlalchemy import select

from bot.jobs.spec import Options, build_spec
from bot.store import ledger
from bot.store.jobs import Requester
from bot.store.ledger import Pricing
from bot.store.models import Job, JobState, Lane, Reservation, UsageEntry
from tests.stores import Stores, service_on, spec

OpenStores = Callable[..., AbstractAsyncContextManager[Stores]]
BOB = Requester(user_id=222, user_name="bob", guild_id=10, channel_id=20)
PRICED = "[billing]\nprice_per_gpu_hour = 7.2\ncurrency = 'EUR'\n[quota]\nimages_per_day = 10\n"


async def ledger_entries(stores: Stores) -> list[UsageEntry]:
    async with stores.sessions() as session:
        return list((await session.scalars(select(UsageEntry).order_by(UsageEntry.id))).all())


async def test_reserve_settle_and_refund_sum_to_the_measured_amounts(
    stores_with: OpenStores,
) -> None:
    async with stores_with(PRICED) as stores:
        await stores.run_job("ok1", BOB, 3.0, count=2)
        await stores.run_job("ok2", BOB, 1.5)
        await stores.quotas.admit("failed", BOB, spec(), "tiny", [1])
        await stores.jobs.transition("failed", JobState.QUEUED, JobState.RUNNING)
        await stores.jobs.transition(
            "failed", JobState.RUNNING, JobState.FAILED, outcome="error", error="oom"
        )
        held = await stores.quotas.admit("open", BOB, spec(count=3), "tiny", [1, 2, 3])
        # Recent history: 4.5 GPU seconds for 3 images of this size.
        assert held.estimate.gpu_seconds == pytest.approx(4.5)

        entries = await ledger_entries(stores)
        assert [(e.job_id, e.images, e.gpu_seconds, e.lane) for e in entries] == [
            ("ok1", 2, 3.0, Lane.NORMAL),
            ("ok2", 1, 1.5, Lane.NORMAL),
        ]
        # 7.2 per GPU hour is 0.002 per GPU second.
        assert [e.cost for e in entries] == pytest.approx([0.006, 0.003])
        assert {e.currency for e in entries} == {"EUR"}
        # Only the job still queued holds a reservation; today's usage is ledger + it.
        assert await stores.count(Reservation) == 1
        status = await stores.quotas.status(BOB.user_id)
        assert status.usage.images == 2 + 1 + 3
        assert status.usage.gpu_seconds == pytest.approx(3.0 + 1.5 + 4.5)
        assert status.usage.jobs_queued == 1
        assert status.currency == "EUR"


async def test_a_job_cancelled_in_the_queue_is_refunded_and_never_charged(
    stores_with: OpenStores,
) -> None:
    async with stores_with(PRICED) as stores:
        config = stores.config
        service = service_on(stores)
        job_spec = build_spec(Options(prompt="a lake", count=2), config.models, "tiny")
        submitted = await service.submit(job_spec, BOB)
        assert (submitted.lane, submitted.queue_position) == (Lane.NORMAL, 1)
        assert await stores.count(Reservation) == 1
        assert await service.cancel(submitted.job.id, actor_id=BOB.user_id)
        assert await stores.count(Reservation) == 0
        assert await ledger_entries(stores) == []
        trail = await stores.jobs.audit_trail(submitted.job.id)
    assert [e.action for e in trail] == [
        "job.queued",
        "quota.reserve",
        "job.cancelled",
        "quota.refund",
    ]


async def test_a_job_requeued_after_a_crash_keeps_its_reservation_and_is_charged_once(
    stores_with: OpenStores,
) -> None:
    async with stores_with(PRICED) as stores:
        await stores.quotas.admit("job", BOB, spec(), "tiny", [1])
        await stores.jobs.transition("job", JobState.QUEUED, JobState.RUNNING)
        # The bot died mid-run; at start the job goes back to the queue.
        await stores.jobs.transition("job", JobState.RUNNING, JobState.QUEUED, outcome="requeued")
        assert await stores.count(Reservation) == 1
        await stores.jobs.transition("job", JobState.QUEUED, JobState.RUNNING)
        await stores.jobs.succeed("job", 2.5, [])
        async with stores.sessions.begin() as session:
            job = await session.get(Job, "job")
            assert job is not None
            assert await ledger.settle(session, job, 1, Pricing()) is None
        assert [(e.job_id, e.gpu_seconds) for e in await ledger_entries(stores)] == [("job", 2.5)]
