"""The Vary (Region) editor links given to members: one row each, named by the link's
nonce, used once by a compare-and-set, every step audited in its own transaction.

The link itself is signed (bot.core.editor); the row is what makes it one use, and
it remembers who was given it and where (roles for quotas, the channel the result
goes back to), which a link should not carry in the clear.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from . import audit
from .audit import Actor
from .models import EditorLink, utcnow

# The audit names of a link's life.
ISSUED, USED, REFUSED = "editor.link.issued", "editor.link.used", "editor.link.refused"


@dataclass(frozen=True, kw_only=True)
class IssuedLink:
    """A link as given: to whom, where, for which image, until when."""

    nonce: str
    job_id: str
    image: int
    user_id: int
    user_name: str
    guild_id: int | None
    channel_id: int | None
    role_ids: tuple[int, ...]
    nsfw_channel: bool
    expires_at: datetime
    used_at: datetime | None = None

    @property
    def actor(self) -> Actor:
        return Actor(self.user_id, self.guild_id, self.channel_id)

    @property
    def target(self) -> str:
        return f"job:{self.job_id}:{self.image}"


class LinkStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def issue(self, link: IssuedLink, command: str) -> None:
        """Record a link given by `command` (the button), audited with it."""
        async with self._sessions.begin() as session:
            session.add(
                EditorLink(
                    nonce=link.nonce,
                    job_id=link.job_id,
                    image=link.image,
                    user_id=link.user_id,
                    user_name=link.user_name,
                    guild_id=link.guild_id,
                    channel_id=link.channel_id,
                    role_ids=list(link.role_ids),
                    nsfw_channel=link.nsfw_channel,
                    expires_at=link.expires_at,
                )
            )
            params = {"command": command, "expires_at": link.expires_at.isoformat()}
            audit.record_by(session, link.actor, ISSUED, target=link.target, params=params)

    async def get(self, nonce: str) -> IssuedLink | None:
        async with self._sessions() as session:
            row = await session.get(EditorLink, nonce)
            return _issued(row) if row is not None else None

    async def use(self, link: IssuedLink) -> bool:
        """Mark the link used, once: False when another request used it first (or it
        expired meanwhile). Audited in the same transaction."""
        now = utcnow()
        async with self._sessions.begin() as session:
            used = await session.execute(
                update(EditorLink)
                .where(
                    EditorLink.nonce == link.nonce,
                    EditorLink.used_at.is_(None),
                    EditorLink.expires_at > now,
                )
                .values(used_at=now)
            )
            if used.rowcount != 1:  # type: ignore[attr-defined]
                return False
            audit.record_by(session, link.actor, USED, target=link.target)
            return True

    async def refused(
        self, reason: str, claimed: dict[str, object], member: int | None = None
    ) -> None:
        """Audit a link refused (tampered, expired, used, another member's); `claimed` is
        what the link says of itself, which is not to be trusted; `member`, whom the link
        was given to where its signature proves it."""
        async with self._sessions.begin() as session:
            audit.record(session, REFUSED, reason, actor_id=member, params=claimed)


def _issued(row: EditorLink) -> IssuedLink:
    return IssuedLink(
        nonce=row.nonce,
        job_id=row.job_id,
        image=row.image,
        user_id=row.user_id,
        user_name=row.user_name,
        guild_id=row.guild_id,
        channel_id=row.channel_id,
        role_ids=tuple(row.role_ids),
        nsfw_channel=row.nsfw_channel,
        expires_at=row.expires_at,
        used_at=row.used_at,
    )
