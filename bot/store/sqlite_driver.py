"""SQLite for the async engine, one hand-off to the connection's thread per statement.

SQLAlchemy's aiosqlite dialect drives a DBAPI cursor the usual way: make it,
execute, fetch the rows, close it; aiosqlite sends each of those calls to the
connection's thread and waits for the answer (~0.1 ms each on a quiet 2-core
machine, more under load), so a statement costs three or four hand-offs. The cursor
here runs the whole statement, rows included, as one call on that thread, and
keeps what SQLAlchemy reads afterwards (rows, description, row count, last row
id). Ending a transaction that never began (a session that only read) needs
no round trip at all: `in_transaction` is read from the event loop's thread,
once every earlier call on the connection has returned. Rows come all at
once: there are no server-side (streaming) cursors, and nothing here streams.
Everything else (the thread, its queue, commit, rollback, close) is
aiosqlite's own connection; the dialect, pooling and SQL are SQLAlchemy's.
Counted on the bench's path: a job's 37 statements and 6 commits make 43 hand-offs
(aiosqlite's own cursor made 188 for the 48 statements the path ran before).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import aiosqlite
from sqlalchemy.engine import URL

Parameters = Sequence[Any] | dict[str, Any]


@dataclass(frozen=True)
class _Ran:
    """What a statement left for SQLAlchemy to read."""

    rows: list[Any]
    description: Any
    rowcount: int
    lastrowid: int | None


def _run(connection: sqlite3.Connection, run: Callable[[sqlite3.Cursor], object]) -> _Ran:
    """On the connection's thread: run a statement, read all it returns, close its cursor."""
    cursor = connection.cursor()
    try:
        run(cursor)
        rows = cursor.fetchall() if cursor.description else []
        return _Ran(rows, cursor.description, cursor.rowcount, cursor.lastrowid)
    finally:
        cursor.close()


class Cursor:
    """The driver cursor SQLAlchemy's adapter awaits: `execute` is the one hand-off;
    fetching and closing only read what it kept."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._ran = _Ran([], None, -1, None)
        self.arraysize = 1

    async def __aenter__(self) -> Cursor:  # SQLAlchemy 2.1 enters the cursor ...
        return self

    def __await__(self) -> Generator[Any, None, Cursor]:  # ... and 2.0 awaits it
        return self.__aenter__().__await__()

    @property
    def description(self) -> Any:
        return self._ran.description

    @property
    def rowcount(self) -> int:
        return self._ran.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._ran.lastrowid

    async def execute(self, sql: str, parameters: Parameters = ()) -> Cursor:
        self._ran = await self._connection.run(lambda cursor: cursor.execute(sql, parameters))
        return self

    async def executemany(self, sql: str, parameters: Iterable[Parameters]) -> Cursor:
        self._ran = await self._connection.run(lambda cursor: cursor.executemany(sql, parameters))
        return self

    async def fetchall(self) -> list[Any]:
        return self._ran.rows

    async def close(self) -> None:
        """Nothing to release: the statement's cursor closed on the thread."""


class Connection(aiosqlite.Connection):
    """aiosqlite's connection whose cursors run a statement in one hand-off."""

    def __init__(self, connector: Callable[[], sqlite3.Connection]) -> None:
        super().__init__(connector, iter_chunk_size=64)
        # As SQLAlchemy's own aiosqlite dialect does: a connection nobody closed never
        # keeps the process from exiting.
        self._thread.daemon = True

    def cursor(self) -> Cursor:  # type: ignore[override]
        return Cursor(self)

    async def commit(self) -> None:
        if self._conn.in_transaction:
            await super().commit()

    async def rollback(self) -> None:
        # sqlite3 opens a transaction only before a write: a session that only read
        # has nothing to end, and asking the thread to end it is a round trip for
        # nothing (most sessions of a job only read).
        if self._conn.in_transaction:
            await super().rollback()

    async def run(self, statement: Callable[[sqlite3.Cursor], object]) -> _Ran:
        """Run `statement` on a fresh cursor on this connection's thread."""
        # aiosqlite's queue to its thread (the one every call of its own goes through).
        ran: _Ran = await self._execute(  # type: ignore[no-untyped-call]
            lambda: _run(self._conn, statement)
        )
        return ran


def connector(url: URL) -> Callable[[], Awaitable[Connection]]:
    """`async_creator` for create_async_engine: connections opened with the arguments
    the URL gives SQLAlchemy's dialect (file, uri mode, timeout, ...)."""
    args, kwargs = url.get_dialect()().create_connect_args(url)
    opener: Callable[[], sqlite3.Connection] = partial(sqlite3.connect, *args, **kwargs)

    async def connect() -> Connection:
        connection = Connection(opener)
        await connection  # starts its thread and opens the file there
        return connection

    return connect
