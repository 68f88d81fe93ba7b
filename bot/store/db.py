"""Opening the database: SQLite tuned for a bot (WAL, busy timeout, foreign keys), or
PostgreSQL through asyncpg; and the retry of writes that must not be lost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession

from . import sqlite_driver

log = logging.getLogger(__name__)

T = TypeVar("T")

# Writers wait this long for a lock instead of failing at once with
# "database is locked"; WAL lets readers go on meanwhile.
BUSY_TIMEOUT_MS = 5000
# A write that must not be lost (a finished job, a delivery) retries this long.
PERSIST_SECONDS = 120.0
# PostgreSQL's errors (SQLSTATE prefixes) that the same transaction tried again can get
# past: a serialization failure or deadlock rolled it back (class 40), a lock wait timed
# out (55P03), the server is shutting down or starting (57P01-57P03), the connection
# broke (class 08).
TRANSIENT_SQLSTATES = ("40", "55P03", "57P01", "57P02", "57P03", "08")


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def ensure_sqlite_folder(url: str) -> None:
    """Create the folder of a SQLite file so a first start needs no manual step."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def open_engine(url: str) -> AsyncEngine:
    ensure_sqlite_folder(url)
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(url)
    # Every session and connection ends its own transaction (commit, or the rollback
    # of close()), so the pool's second rollback on return is skipped: each one is a
    # round trip to aiosqlite's thread, and skipping it makes admission, claim and
    # settle ~8 % faster. The driver's connections run a statement in one round trip
    # instead of three or four (bot.store.sqlite_driver).
    engine = create_async_engine(
        parsed, pool_reset_on_return=None, async_creator=sqlite_driver.connector(parsed)
    )
    event.listen(engine.sync_engine, "connect", _tune_sqlite)
    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def is_transient(error: DBAPIError) -> bool:
    """Whether `error` is the database being busy or in conflict for a while, not the
    write being wrong: SQLite's OperationalError ("database is locked"), PostgreSQL's
    TRANSIENT_SQLSTATES, or a lost connection (the pool opens a new one)."""
    if isinstance(error, OperationalError) or error.connection_invalidated:
        return True
    sqlstate = getattr(error.orig, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith(TRANSIENT_SQLSTATES)


async def persist(write: Callable[[], Awaitable[T]], seconds: float = PERSIST_SECONDS) -> T:
    """Run a write that must not be lost, retrying while the database is locked or busy
    (another process holding the SQLite file for a while; on PostgreSQL a deadlock, a
    serialization failure or a restarting server), for up to `seconds`. `write` runs
    its own transaction, so each try starts afresh."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    delay = 0.2
    while True:
        try:
            return await write()
        except DBAPIError as error:
            if not is_transient(error) or loop.time() + delay > deadline:
                raise
            log.warning("database busy (%s); retrying in %.1f s", error.orig, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
