"""Alembic environment: runs migrations over the async engine Atelier uses."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from bot.store.db import open_engine
from bot.store.models import Base

target_metadata = Base.metadata
# Processes started together on one PostgreSQL database (a front door and a worker)
# migrate in turn: the first upgrades, the others then find nothing left to do.
MIGRATION_LOCK = 0x41544C4D  # "ATLM"


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite can only alter tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":  # held until the migrations commit
            connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        context.run_migrations()


async def _run_async() -> None:
    engine = open_engine(context.config.get_main_option("sqlalchemy.url") or "")
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
