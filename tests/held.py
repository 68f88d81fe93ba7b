"""A real job store that holds a finishing job where a cancel can race its finish."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.store.jobs import JobStore
from bot.store.ledger import Pricing
from bot.store.models import Job


class HeldSuccess(JobStore):
    """Holds each success until `release` is set: the engine has answered, the job is
    not recorded yet (still running, still in its worker's hands)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], pricing: Pricing) -> None:
        super().__init__(sessions, pricing)
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    async def succeed(self, *args: Any, **kwargs: Any) -> Job:
        self.held.set()
        await self.release.wait()
        return await super().succeed(*args, **kwargs)
