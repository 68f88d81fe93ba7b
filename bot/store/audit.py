"""The append-only audit log: one entry per decision, in the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .models import AuditEntry, utcnow


@dataclass(frozen=True)
class Actor:
    """Who did something, and where: the context of every audit entry."""

    user_id: int | None
    guild_id: int | None = None
    channel_id: int | None = None


def user_target(user_id: int) -> str:
    """The audit `target` of an action on a member (ban, quota, forget)."""
    return f"user:{user_id}"


def record(
    session: AsyncSession,
    action: str,
    outcome: str,
    *,
    actor_id: int | None = None,
    guild_id: int | None = None,
    channel_id: int | None = None,
    target: str | None = None,
    params: dict[str, Any] | None = None,
) -> None:
    """Add an audit entry to the session; it commits (or rolls back) with the change."""
    session.add(
        AuditEntry(
            action=action,
            outcome=outcome,
            actor_id=actor_id,
            guild_id=guild_id,
            channel_id=channel_id,
            target=target,
            params=params or {},
        )
    )


def record_by(
    session: AsyncSession,
    actor: Actor,
    action: str,
    outcome: str = "ok",
    target: str | None = None,
    params: dict[str, Any] | None = None,
) -> None:
    record(
        session,
        action,
        outcome,
        actor_id=actor.user_id,
        guild_id=actor.guild_id,
        channel_id=actor.channel_id,
        target=target,
        params=params,
    )


@dataclass(frozen=True)
class AuditPage:
    entries: Sequence[AuditEntry]  # newest first
    total: int  # entries matching the filter, over all pages
    offset: int


class AuditLog:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def record_command(
        self,
        actor: Actor,
        action: str,
        outcome: str = "ok",
        target: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        """Audit a slash command or button click that changes nothing else in the store."""
        async with self._sessions.begin() as session:
            record_by(session, actor, action, outcome, target, params)

    async def count(self, actor_id: int, action: str, since: datetime) -> int:
        """How many `action` entries `actor_id` has since `since` (e.g. blocked prompts)."""
        async with self._sessions() as session:
            total = await session.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(
                    AuditEntry.actor_id == actor_id,
                    AuditEntry.action == action,
                    AuditEntry.at >= since,
                )
            )
            return total or 0

    async def query(
        self,
        user_id: int | None = None,
        action: str | None = None,
        days: float | None = None,
        offset: int = 0,
        limit: int | None = 20,
        guild_id: int | None = None,
    ) -> AuditPage:
        """Entries by or about `user_id`, of `action` (or its family: "quota" matches
        "quota.settle"), from the last `days`, made in `guild_id` (None: anywhere);
        newest first. `limit` None: all of them."""
        where = _filters(user_id, action, days)
        if guild_id is not None:
            where.append(AuditEntry.guild_id == guild_id)
        async with self._sessions() as session:
            total = await session.scalar(select(func.count()).select_from(AuditEntry).where(*where))
            rows = await session.scalars(
                select(AuditEntry)
                .where(*where)
                .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
                .offset(offset)
                .limit(limit)
            )
            return AuditPage(entries=rows.all(), total=total or 0, offset=offset)


def _filters(
    user_id: int | None, action: str | None, days: float | None
) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if user_id is not None:
        where.append(or_(AuditEntry.actor_id == user_id, AuditEntry.target == user_target(user_id)))
    if action:
        family = action.rstrip(".*")
        where.append(
            or_(
                AuditEntry.action == family,
                AuditEntry.action.startswith(f"{family}.", autoescape=True),
            )
        )
    if days is not None:
        where.append(AuditEntry.at >= utcnow() - timedelta(days=days))
    return where
