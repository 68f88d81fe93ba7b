"""Bot-side fixtures: a migrated SQLite file, a config on the tiny model, a job service."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.config import Config, load_config
from bot.jobs.engine_client import EngineProcess
from bot.jobs.service import JobService
from bot.store.db import open_engine, session_factory
from bot.store.jobs import JobStore
from bot.store.migrate import upgrade
from bot.store.models import Job
from engine.protocol import Progress
from tests.configs import write_config
from tests.databases import Database


@pytest.fixture
def config(tmp_path: Path, tiny_model_dir: Path, database: Database) -> Iterator[Config]:
    with database.fresh() as section:
        yield load_config(write_config(tmp_path, tiny_model_dir, section))


@pytest.fixture
async def store(config: Config) -> AsyncIterator[JobStore]:
    await asyncio.to_thread(upgrade, config.database_url)
    database = open_engine(config.database_url)
    yield JobStore(session_factory(database))
    await database.dispose()


class Recorder:
    """A JobListener that remembers what it heard, for assertions."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.progress: dict[str, list[Progress]] = {}
        self.finished: dict[str, Job] = {}
        self._changed = asyncio.Event()

    def job_started(self, job: Job) -> None:
        self.started.append(job.id)

    def job_progress(self, job_id: str, progress: Progress) -> None:
        self.progress.setdefault(job_id, []).append(progress)
        self._changed.set()

    def job_finished(self, job: Job) -> None:
        self.finished[job.id] = job
        self._changed.set()

    async def wait_finished(self, count: int) -> None:
        async with asyncio.timeout(480):
            while len(self.finished) < count:
                self._changed.clear()
                await self._changed.wait()

    async def wait_progress(self, job_id: str) -> None:
        """Until the engine reports a denoising step of the job."""
        async with asyncio.timeout(480):
            while not self.progress.get(job_id):
                self._changed.clear()
                await self._changed.wait()


def make_service(config: Config, store: JobStore, env: dict[str, str] | None = None) -> JobService:
    engine_env = dict(os.environ) | (env or {})
    engines = [EngineProcess(d, config.models, engine_env) for d in config.engine.devices]
    return JobService(
        store=store,
        data_dir=config.storage.data_dir,
        engines=engines,
        job_timeout=config.engine.job_timeout,
        models=config.models,
        default_model=config.engine.default_model,
    )
