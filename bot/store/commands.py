"""The journal of received commands: written before Discord is told "received".

A row is one slash command or button click with everything needed to handle
it again (the member, the raw options, the interaction token). It is settled
in the same transaction that queues its job (or once its refusal is told), so
a bot killed at any instant after the deferral either finds the row pending at
start and completes it, or finds it settled and does nothing: never lost,
never queued twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .models import CommandState, ReceivedCommand, utcnow


class AlreadyHandled(Exception):
    """The command was settled before (by this run or an earlier one): do nothing."""


@dataclass(frozen=True)
class NewCommand:
    interaction_id: int
    command: str
    user_id: int
    user_name: str
    guild_id: int | None
    channel_id: int | None
    token: str
    options: dict[str, Any]
    role_ids: list[int] = field(default_factory=list)
    upload_limit: int | None = None


async def settle(session: AsyncSession, interaction_id: int, outcome: str) -> None:
    """Mark the command handled in the caller's transaction (the one that queues its
    job); AlreadyHandled when it was, so the transaction is rolled back."""
    moved = await session.execute(
        update(ReceivedCommand)
        .where(
            ReceivedCommand.interaction_id == interaction_id,
            ReceivedCommand.state == CommandState.RECEIVED,
        )
        .values(state=CommandState.HANDLED, handled_at=utcnow(), outcome=outcome, token=None)
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        raise AlreadyHandled(interaction_id)


class CommandStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def receive(self, command: NewCommand) -> None:
        """One short insert; a command Discord delivers twice is kept once."""
        async with self._sessions.begin() as session:
            dialect = session.get_bind().dialect.name
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            await session.execute(
                insert(ReceivedCommand)
                .values(state=CommandState.RECEIVED, received_at=utcnow(), **vars(command))
                .on_conflict_do_nothing(index_elements=[ReceivedCommand.interaction_id])
            )

    async def settle(self, interaction_id: int, outcome: str) -> bool:
        """Mark a refused or answered command handled; False if it already was."""
        try:
            async with self._sessions.begin() as session:
                await settle(session, interaction_id, outcome)
        except AlreadyHandled:
            return False
        return True

    async def pending(self) -> Sequence[ReceivedCommand]:
        """Commands acknowledged but not handled, oldest first: to complete at start."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(ReceivedCommand)
                .where(ReceivedCommand.state == CommandState.RECEIVED)
                .order_by(ReceivedCommand.received_at)
            )
            return rows.all()
