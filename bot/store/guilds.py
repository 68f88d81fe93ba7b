"""Per-guild settings and the prompt blocklist, changed by admins and audited."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from . import audit
from .audit import Actor
from .models import BlockedTerm, GuildSettings, utcnow


class GuildStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def blocked_terms(self, guild_id: int | None) -> list[str]:
        """The terms blocked in `guild_id`: its own plus the global ones."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(BlockedTerm.term)
                .where(or_(BlockedTerm.guild_id.is_(None), BlockedTerm.guild_id == guild_id))
                .order_by(BlockedTerm.term)
            )
            return list(dict.fromkeys(rows))

    async def blocked_entries(self, guild_id: int | None) -> list[tuple[str, bool]]:
        """The terms admins blocked that apply in `guild_id`, each with whether it applies
        everywhere (True) or in that server only."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(BlockedTerm.term, BlockedTerm.guild_id)
                .where(or_(BlockedTerm.guild_id.is_(None), BlockedTerm.guild_id == guild_id))
                .order_by(BlockedTerm.term)
            )
            return [(term, where is None) for term, where in rows]

    async def block(self, term: str, actor: Actor, everywhere: bool = False) -> bool:
        """Block a term in the actor's guild (or in all); False when it already was."""
        guild_id = None if everywhere else actor.guild_id
        async with self._sessions.begin() as session:
            known = await session.scalar(
                select(BlockedTerm.id).where(BlockedTerm.term == term, _in_guild(guild_id))
            )
            if known is None:
                session.add(BlockedTerm(guild_id=guild_id, term=term, added_by=actor.user_id))
            audit.record_by(
                session,
                actor,
                "blocklist.add",
                "ok" if known is None else "no-op",
                params={"term": term, "guild_id": guild_id},
            )
        return known is None

    async def unblock(self, term: str, actor: Actor, everywhere: bool = False) -> bool:
        guild_id = None if everywhere else actor.guild_id
        async with self._sessions.begin() as session:
            removed = await session.execute(
                delete(BlockedTerm).where(BlockedTerm.term == term, _in_guild(guild_id))
            )
            done = bool(removed.rowcount)  # type: ignore[attr-defined]
            audit.record_by(
                session,
                actor,
                "blocklist.remove",
                "ok" if done else "no-op",
                params={"term": term, "guild_id": guild_id},
            )
        return done

    async def settings(self, guild_id: int) -> dict[str, Any]:
        async with self._sessions() as session:
            row = await session.get(GuildSettings, guild_id)
            return dict(row.settings) if row is not None else {}

    async def update_settings(self, guild_id: int, changes: dict[str, Any], actor: Actor) -> None:
        """Merge `changes` into the guild's settings; a None value removes its key."""
        async with self._sessions.begin() as session:
            row = await session.get(GuildSettings, guild_id, with_for_update=True)
            if row is None:
                row = GuildSettings(guild_id=guild_id, settings={})
                session.add(row)
            merged = {**row.settings, **changes}
            row.settings = {key: value for key, value in merged.items() if value is not None}
            row.updated_at, row.updated_by = utcnow(), actor.user_id
            audit.record_by(
                session, actor, "guild.settings", target=f"guild:{guild_id}", params=changes
            )


def _in_guild(guild_id: int | None) -> ColumnElement[bool]:
    return BlockedTerm.guild_id.is_(None) if guild_id is None else BlockedTerm.guild_id == guild_id
