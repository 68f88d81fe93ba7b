"""Usage over a period, from the ledger: per member and per day."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..store.models import Job, Lane, UsageEntry, User


@dataclass(frozen=True)
class MemberUsage:
    user_id: int
    name: str
    jobs: int
    images: int
    gpu_seconds: float
    cost: float
    relax_gpu_seconds: float

    @property
    def relax_share(self) -> float:
        """The part of the member's GPU time that ran in the relax lane, 0 to 1."""
        return self.relax_gpu_seconds / self.gpu_seconds if self.gpu_seconds else 0.0


@dataclass(frozen=True)
class DayUsage:
    day: date  # in the quota time zone
    images: int = 0
    gpu_seconds: float = 0.0
    cost: float = 0.0
    relax_gpu_seconds: float = 0.0


class UsageQueries:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], zone: ZoneInfo) -> None:
        self._sessions = sessions
        self.zone = zone

    async def top_users(
        self,
        since: datetime,
        limit: int = 10,
        user_id: int | None = None,
        guild_id: int | None = None,
    ) -> list[MemberUsage]:
        """Members by GPU time since `since`, most first; `guild_id`: of jobs made there."""
        gpu = func.sum(UsageEntry.gpu_seconds)
        relax = func.sum(case((UsageEntry.lane == Lane.RELAX, UsageEntry.gpu_seconds), else_=0.0))
        query = (
            select(
                UsageEntry.user_id,
                User.name,
                func.count(),
                func.sum(UsageEntry.images),
                gpu,
                func.sum(UsageEntry.cost),
                relax,
            )
            .join(User, User.id == UsageEntry.user_id)
            .where(UsageEntry.at >= since)
            .group_by(UsageEntry.user_id, User.name)
            .order_by(gpu.desc())
            .limit(limit)
        )
        if user_id is not None:
            query = query.where(UsageEntry.user_id == user_id)
        if guild_id is not None:
            query = query.where(_made_in(guild_id))
        async with self._sessions() as session:
            rows = await session.execute(query)
            return [
                MemberUsage(uid, name, jobs, int(images), float(seconds), float(cost), float(rel))
                for uid, name, jobs, images, seconds, cost, rel in rows
            ]

    async def entries(
        self, since: datetime, user_id: int | None = None, guild_id: int | None = None
    ) -> Sequence[UsageEntry]:
        """Ledger entries since `since`, oldest first; `guild_id`: of jobs made there."""
        query = select(UsageEntry).where(UsageEntry.at >= since).order_by(UsageEntry.at)
        if user_id is not None:
            query = query.where(UsageEntry.user_id == user_id)
        if guild_id is not None:
            query = query.where(_made_in(guild_id))
        async with self._sessions() as session:
            return (await session.scalars(query)).all()

    async def daily(
        self,
        since: datetime,
        until: datetime,
        user_id: int | None = None,
        guild_id: int | None = None,
    ) -> list[DayUsage]:
        """One row per day of the period in the quota time zone, empty days included.

        Days are bucketed here rather than in SQL: date functions differ between
        SQLite and PostgreSQL, and a bot's ledger is small.
        """
        first, last = since.astimezone(self.zone).date(), until.astimezone(self.zone).date()
        span = [first + timedelta(days=n) for n in range((last - first).days + 1)]
        days = {day: DayUsage(day) for day in span}
        for entry in await self.entries(since, user_id, guild_id):
            day = entry.at.astimezone(self.zone).date()
            if day not in days:
                continue
            old = days[day]
            relax = entry.gpu_seconds if entry.lane is Lane.RELAX else 0.0
            days[day] = DayUsage(
                day,
                old.images + entry.images,
                old.gpu_seconds + entry.gpu_seconds,
                old.cost + entry.cost,
                old.relax_gpu_seconds + relax,
            )
        return list(days.values())


def _made_in(guild_id: int) -> ColumnElement[bool]:
    """Ledger entries of jobs made in that server (over HTTP too, with a key made there)."""
    return UsageEntry.job_id.in_(select(Job.id).where(Job.guild_id == guild_id))
