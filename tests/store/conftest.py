"""Store fixtures: every store over a migrated database (SQLite, then PostgreSQL),
configured per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from tests.databases import Database
from tests.stores import Stores, open_stores


@pytest.fixture
def stores_with(
    tmp_path: Path, database: Database
) -> Callable[[str], AbstractAsyncContextManager[Stores]]:
    """Open the stores with extra TOML config (e.g. a [quota] section)."""
    return lambda extra="": open_stores(tmp_path, extra, database=database)


@pytest.fixture
async def stores(tmp_path: Path, database: Database) -> AsyncIterator[Stores]:
    async with open_stores(tmp_path, database=database) as opened:
        yield opened
