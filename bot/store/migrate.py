"""Apply Alembic migrations from code (`atelier db upgrade` and bot start)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

import migrations

from .db import ensure_sqlite_folder

SCRIPT_LOCATION = Path(migrations.__file__).parent


def alembic_config(url: str) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    # Alembic's config is ConfigParser-based: '%' must be escaped.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _current_revision(path: Path) -> str | None:
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def _backup_before_upgrade(url: str, config: AlembicConfig) -> Path | None:
    """Copy an existing SQLite file that is behind head, so a bad migration loses nothing."""
    path = _sqlite_file(url)
    if path is None or not path.exists() or path.stat().st_size == 0:
        return None
    current = _current_revision(path)
    head = ScriptDirectory.from_config(config).get_current_head()
    if current is None or current == head:
        return None
    backup = path.with_name(f"{path.name}.{current}.bak")
    shutil.copy2(path, backup)
    return backup


def upgrade(url: str, revision: str = "head") -> Path | None:
    """Bring the database to `revision`; returns the backup file made, if any."""
    ensure_sqlite_folder(url)
    config = alembic_config(url)
    backup = _backup_before_upgrade(url, config)
    command.upgrade(config, revision)
    return backup


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


async def upgrade_async(url: str) -> Path | None:
    """Alembic's async env runs its own event loop, so it gets a thread of its own."""
    return await asyncio.to_thread(upgrade, url)
