"""Health checks' proof that the database takes writes: one tiny upsert per check."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .models import Heartbeat, utcnow


class HealthStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def beat(self, service: str) -> None:
        """Write `service`'s heartbeat row; raises what the database raises."""
        async with self._sessions.begin() as session:
            await session.merge(Heartbeat(service=service, beat_at=utcnow()))
