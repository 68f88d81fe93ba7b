"""Every store over one migrated database (SQLite, or PostgreSQL: tests.databases), for
tests that need no engine."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.blobs import Blobs, open_blobs
from bot.config import Config, load_config
from bot.jobs.engine_client import EngineProcess
from bot.jobs.service import JobService
from bot.jobs.spec import JobSpec
from bot.store.audit import AuditLog
from bot.store.cache import CacheStore
from bot.store.db import open_engine, session_factory
from bot.store.jobs import JobStore, NewOutput, Requester
from bot.store.migrate import upgrade
from bot.store.models import Base, Job, JobState
from bot.store.quotas import QuotaRules, QuotaStore
from bot.store.users import UserStore
from tests.configs import write_config
from tests.databases import SQLITE, Database


@dataclass(frozen=True)
class Stores:
    config: Config
    sessions: async_sessionmaker[AsyncSession]
    jobs: JobStore
    quotas: QuotaStore
    users: UserStore
    audit: AuditLog
    blobs: Blobs  # the store `[storage]` names

    async def count(self, model: type[Base], *where: Any) -> int:
        async with self.sessions() as session:
            total = await session.scalar(select(func.count()).select_from(model).where(*where))
            return total or 0

    async def run_job(
        self, job_id: str, requester: Requester, gpu_seconds: float, *, count: int = 1
    ) -> Job:
        """Admit a job and let it succeed with `gpu_seconds` measured, as the service would."""
        await self.quotas.admit(job_id, requester, spec(count=count), "tiny", list(range(count)))
        await self.jobs.transition(job_id, JobState.QUEUED, JobState.RUNNING, device="cpu")
        outputs = [output(job_id, n) for n in range(count)]
        return await self.jobs.succeed(job_id, gpu_seconds, outputs)


def spec(
    count: int = 1, width: int = 512, height: int = 512, steps: int = 30, **fields: Any
) -> JobSpec:
    """A job spec for the tiny model: pricing reads its size, steps and count; forget-me
    redacts its prompts. `fields` sets any other (e.g. init_image)."""
    return JobSpec.model_validate(
        {
            "prompt": "a red fox",
            "negative_prompt": "blur",
            "model": "tiny",
            "width": width,
            "height": height,
            "steps": steps,
            "cfg": 7.0,
            "sampler": "Euler",
            "seed": 1,
            "count": count,
            **fields,
        }
    )


def output(job_id: str, index: int) -> NewOutput:
    return NewOutput(
        index=index,
        path=f"images/{job_id}/{index}.png",
        sha256="0" * 64,
        seed=index,
        width=64,
        height=64,
        recipe={"prompt": "a red fox"},
    )


def service_on(
    stores: Stores, store: JobStore | None = None, *, quotas: bool = True, cache: bool = False
) -> JobService:
    """A job service over `stores` (its jobs on `store`, else the stores'), with their
    quotas, queue settings and blob store, and one CPU engine on the tiny model; its
    workers start only with `start()`, so until then admitted jobs wait, as on a busy
    GPU. With `cache`, the result cache answers repeated seeded requests (bot.jobs.cache)."""
    config = stores.config
    return JobService(
        store=store or stores.jobs,
        data_dir=config.storage.data_dir,
        engines=[EngineProcess("cpu", config.models, dict(os.environ))],
        job_timeout=config.engine.job_timeout,
        models=config.models,
        default_model="tiny",
        quotas=stores.quotas if quotas else None,
        queue=config.queue,
        cache=CacheStore(stores.sessions) if cache else None,
        blobs=stores.blobs,
    )


@asynccontextmanager
async def another_process(stores: Stores) -> AsyncIterator[JobStore]:
    """A job store with connections of its own to the stores' database, as another
    process has (a worker id of its own too): it shares nothing with the stores but the
    database."""
    engine = open_engine(stores.config.database_url)
    try:
        yield JobStore(session_factory(engine), stores.quotas.rules.pricing)
    finally:
        await engine.dispose()


@contextmanager
def writes_to(sessions: async_sessionmaker[AsyncSession]) -> Iterator[list[str]]:
    """The statements that change the database (INSERT, UPDATE, DELETE, ...) run through
    `sessions`' engine meanwhile."""
    engine = sessions.kw["bind"].sync_engine
    written: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if statement.split(None, 1)[0].upper() not in ("SELECT", "PRAGMA", "WITH"):
            written.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield written
    finally:
        event.remove(engine, "before_cursor_execute", record)


@asynccontextmanager
async def open_stores(
    directory: Path,
    extra: str = "",
    model_dir: Path | None = None,
    database: Database = SQLITE,
) -> AsyncIterator[Stores]:
    """Stores over a fresh `database`, migrated; `extra` is TOML put before the config's
    sections.

    Without `model_dir` the model source is any existing folder: enough for
    tests that never start an engine.
    """
    with database.fresh() as section:
        config = load_config(write_config(directory, model_dir or directory, section + extra))
        await asyncio.to_thread(upgrade, config.database_url)
        engine = open_engine(config.database_url)
        sessions = session_factory(engine)
        rules = QuotaRules.from_config(config)
        blobs = open_blobs(config.storage)
        try:
            yield Stores(
                config=config,
                sessions=sessions,
                jobs=JobStore(sessions, rules.pricing),
                quotas=QuotaStore(sessions, rules),
                users=UserStore(sessions, blobs),
                audit=AuditLog(sessions),
                blobs=blobs,
            )
        finally:
            await engine.dispose()
