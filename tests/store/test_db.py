"""Opening the database: the SQLite engine's settings; writes that must not be lost,
retried past SQLite's locks and PostgreSQL's deadlocks."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from bot.store import db
from bot.store.db import open_engine, session_factory
from tests.databases import ROLE, SUPERUSER, Database


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
        # The session's own rollback only, none added by the pool.
        assert len(rollbacks) == 1
        async with sessions.begin() as session:
            await session.execute(text("insert into notes values ('also kept')"))
        assert len(rollbacks) == 1  # a committed session needs none
        async with sessions() as session:
            assert await session.scalar(text("select count(*) from notes")) == 2
    finally:
        await engine.dispose()


async def test_the_sqlite_driver_runs_each_statement_in_one_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = open_engine(f"sqlite+aiosqlite:///{tmp_path / 'atelier.db'}")
    handed: list[object] = []
    hand_off = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        handed.append(fn)
        return await hand_off(self, fn, *args, **kwargs)

    try:
        sessions = session_factory(engine)
        async with sessions.begin() as session:
            await session.execute(text("create table notes (id integer primary key, body text)"))
        monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
        async with sessions.begin() as session:
            added = await session.execute(text("insert into notes (body) values ('first')"))
            assert added.lastrowid == 1  # type: ignore[attr-defined]
            await session.execute(
                text("insert into notes (body) values (:body)"),
                [{"body": "second"}, {"body": "third"}],
            )
            changed = await session.execute(
                text("update notes set body = upper(body) where id > 1")
            )
            assert changed.rowcount == 2  # type: ignore[attr-defined]
            rows = (await session.execute(text("select id, body from notes order by id"))).all()
            assert [tuple(row) for row in rows] == [(1, "first"), (2, "SECOND"), (3, "THIRD")]
        # Four statements and the commit: one hand-off each (aiosqlite's cursor makes four).
        assert len(handed) == 5
        async with sessions() as session:  # only reads: no transaction to end
            assert await session.scalar(text("select count(*) from notes")) == 3
        assert len(handed) == 6
        async with sessions.begin() as session:
            assert await session.scalar(text("select body from notes where id = 1")) == "first"
        assert len(handed) == 7
    finally:
        await engine.dispose()


async def test_the_sqlite_driver_raises_sqlalchemys_errors(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite+aiosqlite:///{tmp_path / 'atelier.db'}")
    try:
        sessions = session_factory(engine)
        async with sessions.begin() as session:
            await session.execute(text("create table notes (id integer primary key)"))
            await session.execute(text("insert into notes values (1)"))
        with pytest.raises(IntegrityError):
            async with sessions.begin() as session:
                await session.execute(text("insert into notes values (1)"))
        with pytest.raises(OperationalError, match="no such table"):
            async with sessions() as session:
                await session.execute(text("select * from absent"))
        async with sessions() as session:  # the failed transaction left nothing behind
            assert await session.scalar(text("select count(*) from notes")) == 1
    finally:
        await engine.dispose()


async def test_a_write_that_must_not_be_lost_waits_out_another_programs_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(db, "BUSY_TIMEOUT_MS", 100)  # SQLite gives up sooner: persist retries
    path = tmp_path / "atelier.db"
    engine = open_engine(f"sqlite+aiosqlite:///{path}")
    other = sqlite3.connect(path, isolation_level=None)  # another program, e.g. a backup
    try:
        sessions = session_factory(engine)
        async with sessions.begin() as session:
            await session.execute(text("create table notes (body text)"))
        other.execute("begin immediate")  # holds the write lock

        async def write() -> None:
            async with sessions.begin() as session:
                await session.execute(text("insert into notes values ('kept')"))

        async def release_later() -> None:
            await asyncio.sleep(0.6)
            other.rollback()  # quick: it only lets go

        with caplog.at_level(logging.WARNING, logger="bot.store.db"):
            await asyncio.gather(db.persist(write, seconds=30), release_later())
        assert "database busy" in caplog.text  # the driver's error reached persist as such
        async with sessions() as session:
            assert await session.scalar(text("select body from notes")) == "kept"
    finally:
        other.close()
        await engine.dispose()


@pytest.mark.postgresql_only
async def test_a_write_that_must_not_be_lost_is_tried_again_after_a_deadlock(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    server = database.server
    assert server is not None
    with server.database() as url:
        engine = open_engine(url)
        # Another program, as PostgreSQL's superuser: it waits long before looking for a
        # deadlock, so the write (waiting first, checking after 1 s) is the one rolled back.
        other = open_engine(url.replace(f"//{ROLE}@", f"//{SUPERUSER}@"))
        try:
            sessions = session_factory(engine)
            async with sessions.begin() as session:
                await session.execute(
                    text("create table notes (id integer primary key, body text)")
                )
                await session.execute(text("insert into notes values (1, 'a'), (2, 'b')"))
            first_locked, second_locked = asyncio.Event(), asyncio.Event()
            tries = 0

            async def write() -> None:  # locks note 1, then note 2
                nonlocal tries
                tries += 1
                async with sessions.begin() as session:
                    await session.execute(text("update notes set body = 'kept' where id = 1"))
                    first_locked.set()
                    await second_locked.wait()
                    await session.execute(text("update notes set body = 'kept' where id = 2"))

            async def crossing() -> None:  # locks note 2, then note 1
                async with other.begin() as connection:
                    await connection.execute(text("set local deadlock_timeout = '10s'"))
                    await connection.execute(text("update notes set body = 'other' where id = 2"))
                    second_locked.set()
                    await first_locked.wait()
                    await asyncio.sleep(0.2)  # the write now waits for note 2
                    await connection.execute(text("update notes set body = 'other' where id = 1"))

            with caplog.at_level(logging.WARNING, logger="bot.store.db"):
                await asyncio.gather(db.persist(write, seconds=30), crossing())
            assert tries == 2 and "deadlock detected" in caplog.text
            async with sessions() as session:  # the retried write came last
                rows = (await session.execute(text("select body from notes"))).scalars().all()
                assert rows == ["kept", "kept"]
        finally:
            await other.dispose()
            await engine.dispose()


@pytest.mark.postgresql_only
async def test_a_write_postgresql_refuses_for_good_is_not_tried_again(database: Database) -> None:
    server = database.server
    assert server is not None
    with server.database() as url:
        engine = open_engine(url)
        tries = 0

        async def write() -> None:
            nonlocal tries
            tries += 1
            async with session_factory(engine).begin() as session:
                await session.execute(text("insert into absent values (1)"))

        try:
            with pytest.raises(ProgrammingError, match="does not exist"):
                await db.persist(write, seconds=30)
            assert tries == 1
        finally:
            await engine.dispose()
