"""Opening the database: the SQLite engine's settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bot.store.db import open_engine, session_factory


async def test_a_session_ends_its_transaction_once_and_the_pool_adds_no_rollback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = open_engine(f"sqlite+aiosqlite:///{tmp_path / 'atelier.db'}")
    dialect = engine.sync_engine.dialect
    rollbacks: list[object] = []
    do_rollback = dialect.do_rollback

    def counted(connection: Any) -> None:
        rollbacks.append(connection)
        do_rollback(connection)

    try:
        sessions = session_factory(engine)
        async with sessions.begin() as session:
            await session.execute(text("create table notes (body text)"))
            await session.execute(text("insert into notes values ('kept')"))
        monkeypatch.setattr(dialect, "do_rollback", counted)
        async with sessions() as session:  # read only: closed without a commit
            assert await session.scalar(text("select body from notes")) == "kept"
        # Each rollback is a round trip to aiosqlite's thread: the session's own, only.
        assert len(rollbacks) == 1
        async with sessions.begin() as session:
            await session.execute(text("insert into notes values ('also kept')"))
        assert len(rollbacks) == 1  # a committed session needs none
        async with sessions() as session:
            assert await session.scalar(text("select count(*) from notes")) == 2
    finally:
        await engine.dispose()
