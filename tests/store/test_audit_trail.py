"""The audit log: each store operation leaves exactly its entries, in its transaction."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.quota import Limits
from bot.store import ledger, quotas
from bot.store.audit import Actor, AuditEntry
from bot.store.jobs import Requester
from bot.store.models import Job, JobState, Output, QuotaScope, Reservation, UsageEntry
from tests.stores import Stores, output, spec

CARA = Requester(user_id=333, user_name="cara", guild_id=10, channel_id=20)
ADMIN = Actor(user_id=1, guild_id=10, channel_id=21)


async def entries(stores: Stores) -> list[tuple[str, str, int | None, str | None]]:
    async with stores.sessions() as session:
        rows = await session.scalars(select(AuditEntry).order_by(AuditEntry.id))
        return [(e.action, e.outcome, e.actor_id, e.target) for e in rows]


async def test_each_store_operation_leaves_exactly_its_entries(stores: Stores) -> None:
    await stores.run_job("job1", CARA, 2.0)
    await stores.quotas.admit("job2", CARA, spec(), "tiny", [1])
    await stores.jobs.transition(
        "job2", JobState.QUEUED, JobState.CANCELLED, outcome="cancelled", actor_id=1
    )
    await stores.users.ban(CARA.user_id, "rude", ADMIN)
    await stores.users.unban(CARA.user_id, ADMIN)
    await stores.quotas.set_policy(QuotaScope.USER, CARA.user_id, Limits(jobs_queued=1), ADMIN)
    await stores.quotas.reset_policy(QuotaScope.USER, CARA.user_id, ADMIN)
    await stores.users.set_defaults(CARA.user_id, "cara", {"steps": 20}, Actor(CARA.user_id))
    await stores.audit.record_command(ADMIN, "admin.queue", params={"page": 1})
    cara = f"user:{CARA.user_id}"
    assert await entries(stores) == [
        ("job.queued", "ok", 333, "job1"),
        ("quota.reserve", "ok", 333, "job1"),
        ("job.running", "ok", 333, "job1"),
        ("job.succeeded", "ok", 333, "job1"),
        ("quota.settle", "ok", 333, "job1"),
        ("job.queued", "ok", 333, "job2"),
        ("quota.reserve", "ok", 333, "job2"),
        ("job.cancelled", "cancelled", 1, "job2"),
        ("quota.refund", "ok", 333, "job2"),
        ("user.ban", "ok", 1, cara),
        ("user.unban", "ok", 1, cara),
        ("quota.set", "ok", 1, cara),
        ("quota.reset", "ok", 1, cara),
        ("user.defaults", "ok", 333, cara),
        ("admin.queue", "ok", 1, None),
    ]
    async with stores.sessions() as session:
        ban = await session.scalar(select(AuditEntry).where(AuditEntry.action == "user.ban"))
    assert ban is not None
    assert (ban.guild_id, ban.channel_id, ban.params) == (10, 21, {"reason": "rude"})


async def test_a_failure_mid_admission_leaves_neither_job_nor_entry(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(quotas.ledger, "reserve", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        await stores.quotas.admit("job", CARA, spec(), "tiny", [1])
    assert await stores.count(Job) == 0
    assert await entries(stores) == []


async def test_a_failure_mid_settlement_leaves_the_job_running_and_uncharged(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    await stores.quotas.admit("job", CARA, spec(), "tiny", [1])
    await stores.jobs.transition("job", JobState.QUEUED, JobState.RUNNING)
    before = await entries(stores)

    async def broken(*_args: object) -> None:
        raise RuntimeError("I/O error")

    monkeypatch.setattr(ledger, "settle", broken)
    with pytest.raises(RuntimeError, match="I/O error"):
        await stores.jobs.succeed("job", 1.0, [output("job", 0)])
    assert (await stores.jobs.get("job")).state is JobState.RUNNING
    assert await stores.count(Output) == 0
    assert await stores.count(UsageEntry) == 0
    assert await stores.count(Reservation) == 1
    assert await entries(stores) == before


async def test_audit_query_filters_pages_and_counts_newest_first(stores: Stores) -> None:
    for n in range(5):
        await stores.audit.record_command(Actor(CARA.user_id), f"imagine.button{n % 2}")
    await stores.users.ban(CARA.user_id, "spam", ADMIN)
    await stores.audit.record_command(ADMIN, "admin.usage")

    about_cara = await stores.audit.query(user_id=CARA.user_id, offset=1, limit=2)
    assert about_cara.total == 6
    assert [e.action for e in about_cara.entries] == ["imagine.button0", "imagine.button1"]
    family = await stores.audit.query(action="imagine", limit=10)
    assert family.total == 5
    exact = await stores.audit.query(action="imagine.button1", days=1)
    assert exact.total == 2
    assert (await stores.audit.query(action="imag")).total == 0
