"""Health checks' proof that the database takes writes: a heartbeat row, written on a
timer and read by /healthz.

A health endpoint is called by anyone who can reach it, as often as they like. Were
it to write, a flood of calls (behind a proxy, unauthenticated) would queue for
SQLite's one write lock ahead of the jobs; so the write happens every
HEARTBEAT_EVERY on a timer, and a request only reads how recent the last one is.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..periodic import Periodic
from .models import Heartbeat, utcnow

log = logging.getLogger(__name__)

HEARTBEAT_EVERY = timedelta(seconds=10)
# A heartbeat older than this many periods means the writes stopped going through
# (one write may wait for the busy timeout; three in a row do not).
STALE_AFTER_BEATS = 3
READ_TIMEOUT = 10.0


class HealthStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def beat(self, service: str) -> None:
        """Write `service`'s heartbeat row; raises what the database raises."""
        async with self._sessions.begin() as session:
            await session.merge(Heartbeat(service=service, beat_at=utcnow()))

    async def last_beat(self, service: str) -> datetime | None:
        """When `service`'s heartbeat was last written (a read: no write lock)."""
        async with self._sessions() as session:
            return await session.scalar(
                select(Heartbeat.beat_at).where(Heartbeat.service == service)
            )


@dataclass(frozen=True)
class DatabaseHealth:
    writable: bool
    detail: str  # in words an admin can act on


class DatabaseHeartbeat:
    """Writes `service`'s heartbeat at start and every `every`; `health` reads it.

    Owned by the server that answers /healthz: `start` with it, `stop` (cancels and
    awaits the timer) when it stops.
    """

    def __init__(
        self, store: HealthStore, service: str, every: timedelta = HEARTBEAT_EVERY
    ) -> None:
        self._store = store
        self._service = service
        self._every = every
        self._error: str | None = None  # why the last write failed; None: it went through
        self._timer = Periodic(f"{service} heartbeat", self._beat, every.total_seconds())

    async def start(self) -> None:
        """Write the first heartbeat (so the first request has one to read), then time."""
        await self._beat()
        self._timer.start()

    async def stop(self) -> None:
        await self._timer.stop()

    async def health(self) -> DatabaseHealth:
        """Whether the timer's writes go through: the last one's outcome and the stored
        heartbeat's age (a write stuck behind the lock has no outcome yet). No write."""
        if self._error is not None:
            return DatabaseHealth(False, f"not writable: {self._error}")
        try:
            beat_at = await asyncio.wait_for(self._store.last_beat(self._service), READ_TIMEOUT)
        except Exception as error:
            return DatabaseHealth(False, f"not readable: {type(error).__name__}")
        if beat_at is None:
            return DatabaseHealth(False, "not writable: no heartbeat was ever written")
        age = utcnow() - beat_at
        if age > self._every * STALE_AFTER_BEATS:
            return DatabaseHealth(
                False, f"not writable: the last heartbeat is {age.total_seconds():.0f} s old"
            )
        return DatabaseHealth(True, "writable")

    async def _beat(self) -> None:
        try:
            await self._store.beat(self._service)
        except Exception as error:
            if self._error is None:  # logged as it starts failing, not at every beat
                log.warning("database heartbeat: the database refused a write: %s", error)
            self._error = type(error).__name__
        else:
            if self._error is not None:
                log.info("database heartbeat: writes go through again")
            self._error = None
