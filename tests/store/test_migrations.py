"""Migrations: upgrade from empty, downgrade to base, and no drift from the models."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from bot.store.migrate import downgrade, upgrade
from bot.store.models import Base


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute("select name from sqlite_master where type='table'")
        return {name for (name,) in rows}


def test_upgrade_from_empty_then_downgrade_to_base(tmp_path: Path) -> None:
    path = tmp_path / "db" / "atelier.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url)
    assert {"users", "jobs", "outputs", "audit_log"} <= tables(path)
    downgrade(url, "base")
    assert tables(path) == {"alembic_version"}
    upgrade(url)
    assert "jobs" in tables(path)


def test_database_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "atelier.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    with sqlite3.connect(path) as connection:
        assert connection.execute("pragma journal_mode").fetchone() == ("wal",)


def test_models_and_migrations_do_not_drift(tmp_path: Path) -> None:
    path = tmp_path / "atelier.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()


def test_upgrade_of_a_database_at_head_makes_no_backup(tmp_path: Path) -> None:
    path = tmp_path / "atelier.db"
    url = f"sqlite+aiosqlite:///{path}"
    assert upgrade(url) is None  # a new file: nothing to back up
    assert upgrade(url) is None
    assert list(tmp_path.glob("*.bak")) == []
