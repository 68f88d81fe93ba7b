"""The append-only audit log: one entry per decision, in the caller's transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from .models import AuditEntry


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
