"""The database heartbeat: written on a timer, read by health checks."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import text, update

from bot.store.health import DatabaseHealth, DatabaseHeartbeat, HealthStore
from bot.store.models import Heartbeat, utcnow
from tests.databases import Database, Kind
from tests.stores import Stores, writes_to

QUICK = timedelta(seconds=0.05)


async def test_the_heartbeat_is_written_at_start_and_on_its_timer_until_stopped(
    stores: Stores,
) -> None:
    store = HealthStore(stores.sessions)
    heartbeat = DatabaseHeartbeat(store, "bot", every=QUICK)
    await heartbeat.start()
    first = await store.last_beat("bot")
    assert first is not None  # a request right after start finds one
    await asyncio.sleep(0.3)
    await heartbeat.stop()
    last = await store.last_beat("bot")
    assert last is not None and last > first
    await asyncio.sleep(0.2)
    assert await store.last_beat("bot") == last  # the timer ended with stop


async def test_reading_the_health_writes_nothing(stores: Stores) -> None:
    heartbeat = DatabaseHeartbeat(HealthStore(stores.sessions), "bot")
    await heartbeat.start()
    try:
        with writes_to(stores.sessions) as written:
            for _ in range(20):
                assert await heartbeat.health() == DatabaseHealth(True, "writable")
        assert written == []
    finally:
        await heartbeat.stop()


async def test_a_stale_or_refused_heartbeat_is_reported_as_not_writable(
    stores: Stores, database: Database
) -> None:
    heartbeat = DatabaseHeartbeat(HealthStore(stores.sessions), "bot", every=timedelta(hours=1))
    assert await heartbeat.health() == DatabaseHealth(
        False, "not writable: no heartbeat was ever written"
    )
    await heartbeat.start()
    async with stores.sessions.begin() as session:
        await session.execute(update(Heartbeat).values(beat_at=utcnow() - timedelta(hours=4)))
    health = await heartbeat.health()
    assert not health.writable and health.detail.startswith("not writable: the last heartbeat is")
    await heartbeat.stop()

    # A write the database refuses is reported by the next request.
    async with stores.sessions.begin() as session:
        await session.execute(text("DROP TABLE heartbeats"))
    refused = DatabaseHeartbeat(HealthStore(stores.sessions), "bot")
    await refused.start()
    # The driver's name for a missing table: SQLite's OperationalError, PostgreSQL's
    # ProgrammingError (undefined table).
    error = "OperationalError" if database.kind is Kind.SQLITE else "ProgrammingError"
    assert await refused.health() == DatabaseHealth(False, f"not writable: {error}")
    await refused.stop()
