"""Migrations: upgrade from empty, downgrade to base, and no drift from the models, on
SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect

from bot.store.db import open_engine
from bot.store.migrate import downgrade, upgrade
from bot.store.models import Base
from tests.databases import Database

REPO = Path(__file__).resolve().parents[2]


async def inspected(url: str, look: Any) -> Any:
    """`look(connection)` on a synchronous connection to `url`."""
    engine = open_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(look)
    finally:
        await engine.dispose()


def tables(url: str) -> set[str]:
    return set(asyncio.run(inspected(url, lambda c: inspect(c).get_table_names())))


def test_upgrade_from_empty_then_downgrade_to_base(tmp_path: Path, database: Database) -> None:
    with database.fresh_url(tmp_path / "db") as url:
        upgrade(url)
        assert {"users", "jobs", "outputs", "audit_log"} <= tables(url)
        downgrade(url, "base")
        assert tables(url) == {"alembic_version"}
        upgrade(url)
        assert "jobs" in tables(url)


def test_database_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "atelier.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    with sqlite3.connect(path) as connection:
        assert connection.execute("pragma journal_mode").fetchone() == ("wal",)


def test_models_and_migrations_do_not_drift(tmp_path: Path, database: Database) -> None:
    def drift(connection: Connection) -> Any:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)

    with database.fresh_url(tmp_path) as url:
        upgrade(url)
        assert asyncio.run(inspected(url, drift)) == []


def test_upgrade_of_a_database_at_head_makes_no_backup(tmp_path: Path) -> None:
    path = tmp_path / "atelier.db"
    url = f"sqlite+aiosqlite:///{path}"
    assert upgrade(url) is None  # a new file: nothing to back up
    assert upgrade(url) is None
    assert list(tmp_path.glob("*.bak")) == []


@pytest.mark.postgresql_only
def test_processes_started_together_on_one_database_migrate_in_turn(
    tmp_path: Path, database: Database
) -> None:
    """A front door and workers started at once (docker compose up) on a new database."""
    with database.fresh_url(tmp_path / "db") as url:
        migrate = "import sys; from bot.store.migrate import upgrade; upgrade(sys.argv[1])"
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", migrate, url],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for _ in range(3)
        ]
        outputs = [process.communicate(timeout=120)[0].decode() for process in processes]
        assert [process.returncode for process in processes] == [0, 0, 0], outputs
        assert {"users", "jobs", "outputs", "audit_log"} <= tables(url)
