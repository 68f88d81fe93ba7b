"""The databases tests run on: SQLite (a file in the test's data folder, the default)
and a throwaway PostgreSQL server, for the tests that run on both (tests/conftest.py).

The server's binaries come from the distribution (`/usr/lib/postgresql/<version>/bin`,
or PATH); where none is installed and this is root on Debian or Ubuntu, apt installs
`postgresql` first. `initdb` refuses to run as root, so as root the cluster belongs to
`nobody`. The server listens on a local port only, trusts local connections (nothing
else reaches it) and is stopped, its folder removed, at the end of the session. The bot
connects as `atelier`, an ordinary role that owns its database, as docs/operations.md
has an operator set it up.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import count
from pathlib import Path

from tests.system_packages import install_if_missing

ROLE = "atelier"
SUPERUSER = "postgres"


def _installed_bin() -> Path | None:
    """The newest distribution PostgreSQL's bin folder, else the one on PATH."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def postgres_bin() -> Path:
    """The folder of `initdb`, `pg_ctl` and `psql`, installing PostgreSQL if it is missing."""
    install_if_missing("postgresql", lambda: _installed_bin() is not None)
    found = _installed_bin()
    if found is None:
        raise RuntimeError(
            "the PostgreSQL tests need PostgreSQL's server binaries (initdb, pg_ctl): install"
            " the distribution's postgresql package"
        )
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class PostgresServer:
    """A running cluster; `database()` makes a fresh, empty database owned by `atelier`."""

    bin: Path
    folder: Path
    port: int
    user: str | None  # the account the server runs as, when this process is root
    _names: Iterator[int] = field(default_factory=count)

    def _run(self, program: str, *args: str) -> str:
        done = subprocess.run(
            [str(self.bin / program), *args],
            check=True,
            capture_output=True,
            text=True,
            user=self.user,
            cwd=self.folder,
        )
        return done.stdout

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one statement as the superuser; returns psql's unaligned output."""
        server = ("-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", database)
        return self._run(
            "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", *server, "-c", statement
        )

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{ROLE}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        name = f"atelier_{os.getpid()}_{next(self._names)}"
        self.sql(f'CREATE DATABASE "{name}" OWNER {ROLE}')
        return name

    def drop_database(self, name: str) -> None:
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @contextmanager
    def database(self) -> Iterator[str]:
        """The URL of a new empty database, dropped after (its connections closed)."""
        name = self.create_database()
        try:
            yield self.url(name)
        finally:
            self.drop_database(name)


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Initialise a cluster in a new folder, start it on a free local port, and stop it
    and remove the folder after."""
    bin_folder = postgres_bin()
    user = "nobody" if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="atelier-pg-"))
    try:
        if user is not None:
            shutil.chown(folder, user)
        server = PostgresServer(bin_folder, folder, _free_port(), user)
        data = str(folder / "data")
        cluster = ("-U", SUPERUSER, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
        server._run("initdb", "-D", data, *cluster)
        # fsync off: a throwaway cluster needs no durability, and commits stay fast.
        options = f"-p {server.port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        server._run(
            "pg_ctl", "-D", data, "-l", str(folder / "server.log"), "-w", "-o", options, "start"
        )
        try:
            server.sql(f"CREATE ROLE {ROLE} LOGIN")
            yield server
        finally:
            server._run("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class Kind(StrEnum):
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


@dataclass(frozen=True)
class Database:
    """Where a test's stores live: `fresh()` gives the [database] section of a config
    over a new empty database (none for SQLite: the config's default file)."""

    kind: Kind
    server: PostgresServer | None = None

    @contextmanager
    def fresh(self) -> Iterator[str]:
        if self.server is None:
            yield ""
            return
        with self.server.database() as url:
            yield f'[database]\nurl = "{url}"\n'

    @contextmanager
    def fresh_url(self, directory: Path) -> Iterator[str]:
        """The URL of a new empty database (SQLite's file in `directory`)."""
        if self.server is None:
            yield f"sqlite+aiosqlite:///{directory / 'atelier.db'}"
            return
        with self.server.database() as url:
            yield url


SQLITE = Database(Kind.SQLITE)
