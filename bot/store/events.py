"""Job events as row data, for front doors in other processes than the one running a job.

A running job's progress is a row update (`record_progress`) that any front door reads
(`running`); that a job started or finished is announced on PostgreSQL by a NOTIFY on
EVENTS_CHANNEL carrying `<kind>:<job id>` only (a payload may not pass 8000 bytes, and
the state is in the row anyway). Delivering a finished job's answer is claimed with a
compare-and-set on its row (`claim_delivery`), so that with several front doors exactly
one delivers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from . import audit
from .models import FINISHED, Job, JobState, utcnow

log = logging.getLogger(__name__)

# PostgreSQL's channel on which started and finished jobs are announced.
EVENTS_CHANNEL = "atelier_job"
# A dropped LISTEN connection is opened again after this, doubling up to RECONNECT_MAX.
RECONNECT_FIRST = 0.5
RECONNECT_MAX = 30.0
# How often a held LISTEN connection is checked for having been closed under it
# (asyncpg also says so at once, when it notices).
LISTEN_CHECK_SECONDS = 5.0


class EventKind(StrEnum):
    STARTED = "started"
    FINISHED = "finished"


@dataclass(frozen=True)
class Announcement:
    """One NOTIFY's payload: what happened to which job."""

    kind: EventKind
    job_id: str

    def payload(self) -> str:
        return f"{self.kind}:{self.job_id}"

    @classmethod
    def read(cls, payload: str) -> Announcement | None:
        """The announcement in `payload`; None for one this version does not know."""
        kind, _, job_id = payload.partition(":")
        if kind not in set(EventKind) or not job_id:
            return None
        return cls(EventKind(kind), job_id)


@dataclass(frozen=True)
class RunningRow:
    """A running job's progress as its row holds it (step None before the first one)."""

    job_id: str
    step: int | None
    total: int | None
    preview: str | None


class EventStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._engine: AsyncEngine = sessions.kw["bind"]

    @property
    def shared(self) -> bool:
        """Whether other processes may share this database (PostgreSQL): events then
        travel through rows and notifications; on SQLite one process is the rule."""
        return self._engine.dialect.name == "postgresql"

    async def job(self, job_id: str) -> Job | None:
        async with self._sessions() as session:
            return await session.get(Job, job_id)

    # -- progress --------------------------------------------------------------------------

    async def record_progress(
        self, job_id: str, step: int, total: int, preview: str | None
    ) -> None:
        """A running job's latest step (and preview, if it has one); a job no longer
        running is left as it ended. Not audited: progress changes no state."""
        values: dict[str, object] = {"progress_step": step, "progress_total": total}
        if preview is not None:
            values["preview"] = preview
        async with self._sessions.begin() as session:
            await session.execute(
                update(Job)
                .where(Job.id == job_id, Job.state == JobState.RUNNING)
                .values(**values)
                .execution_options(synchronize_session=False)
            )

    async def running(self) -> list[RunningRow]:
        """Every running job's progress, in one read (a handful of rows: one batch per
        engine)."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(Job.id, Job.progress_step, Job.progress_total, Job.preview).where(
                    Job.state == JobState.RUNNING
                )
            )
            return [RunningRow(*row) for row in rows]

    # -- announcements ---------------------------------------------------------------------

    async def announce(self, announcement: Announcement) -> None:
        """NOTIFY every listening process (PostgreSQL only; nothing to do on SQLite)."""
        if not self.shared:
            return
        async with self._sessions.begin() as session:
            await session.execute(select(func.pg_notify(EVENTS_CHANNEL, announcement.payload())))

    async def listen(
        self, heard: Callable[[Announcement], None], connected: Callable[[], Awaitable[None]]
    ) -> None:
        """Call `heard` for each announcement, for ever (cancel to stop): LISTEN on a held
        connection, opened again with backoff whenever it drops or cannot be opened
        (the database restarting), `connected` awaited after each (re)connection so the
        caller can catch up on what it may have missed meanwhile."""

        def notified(_connection: object, _pid: int, _channel: str, payload: str) -> None:
            if (announcement := Announcement.read(payload)) is not None:
                heard(announcement)

        delay = RECONNECT_FIRST
        while True:
            try:
                await self._listen_once(notified, connected)
                delay = RECONNECT_FIRST
            # Whatever the connection meets (SQLAlchemy's errors or asyncpg's own), the
            # listener goes on: the front door's poll of `running` still sees progress.
            except Exception as error:
                log.warning("listening for job events failed (%s); again in %g s", error, delay)
            else:
                log.warning("the connection listening for job events dropped; reconnecting")
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    async def _listen_once(
        self,
        notified: Callable[[object, int, str, str], None],
        connected: Callable[[], Awaitable[None]],
    ) -> None:
        """LISTEN on one connection until it closes."""
        async with self._engine.connect() as connection:
            raw = (await connection.get_raw_connection()).driver_connection
            assert raw is not None  # a live connection, just checked out
            lost = asyncio.Event()
            raw.add_termination_listener(lambda _connection: lost.set())
            await raw.add_listener(EVENTS_CHANNEL, notified)
            await connected()
            while not lost.is_set() and not raw.is_closed():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), LISTEN_CHECK_SECONDS)
            # The connection is gone: the pool must not hand it out again.
            await connection.invalidate()

    # -- delivery --------------------------------------------------------------------------

    async def claim_delivery(
        self, job_id: str, by: str, lease: timedelta, take_from: Sequence[str] = ()
    ) -> bool:
        """Claim delivering a finished, undelivered job for front door `by` until `lease`
        from now, with its audit entry, in one transaction: a compare-and-set that wins
        when nobody holds the claim, its holder is `by` itself (a retry), its lease
        lapsed, or its holder is one of `take_from` (front doors known to be gone).
        False when another front door holds it, or it is delivered already."""
        now = utcnow()
        async with self._sessions.begin() as session:
            claimed = (
                await session.execute(
                    update(Job)
                    .where(
                        Job.id == job_id,
                        Job.state.in_(FINISHED),
                        Job.delivered_at.is_(None),
                        or_(
                            Job.delivery_claimed_by.is_(None),
                            Job.delivery_claimed_by.in_([by, *take_from]),
                            Job.delivery_claimed_until < now,
                        ),
                    )
                    .values(delivery_claimed_by=by, delivery_claimed_until=now + lease)
                    .returning(Job.user_id, Job.guild_id, Job.channel_id)
                    .execution_options(synchronize_session=False)
                )
            ).one_or_none()
            if claimed is None:
                return False
            user_id, guild_id, channel_id = claimed
            audit.record(
                session,
                "job.delivery_claimed",
                "ok",
                actor_id=user_id,
                guild_id=guild_id,
                channel_id=channel_id,
                target=job_id,
                params={"by": by},
            )
            return True
