"""Building what every process of Atelier needs and none of it Discord: the database,
the engines, the job service, the stop signals. `atelier run` and `atelier serve`
(bot.app) and `atelier worker` (bot.worker) build their services here, so a GPU host's
worker never imports discord."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from .blobs import Blobs, open_blobs
from .config import Config
from .jobs.engine_client import EngineProcess
from .jobs.events import JobEvents
from .jobs.relay import SharedEvents
from .jobs.service import JobService
from .ops.logs import ENGINE_FORMAT_VARIABLE
from .store.cache import CacheStore
from .store.db import open_engine
from .store.events import EventStore
from .store.jobs import JobStore
from .store.migrate import upgrade_async
from .store.quotas import QuotaStore

log = logging.getLogger(__name__)

SECRET_VARIABLES = ("DISCORD_TOKEN",)


def engine_environment(secrets: tuple[str, ...] = SECRET_VARIABLES) -> dict[str, str]:
    """The engine's environment: the bot's, minus secrets it has no use for."""
    return {key: value for key, value in os.environ.items() if key not in secrets}


def build_engines(config: Config) -> list[EngineProcess]:
    env = engine_environment((*SECRET_VARIABLES, config.discord.token_env))
    env[ENGINE_FORMAT_VARIABLE] = config.logging.format  # the engine logs like the bot
    return [
        EngineProcess(
            device,
            config.models,
            env,
            config.engine.model_memory_gb,
            config.engine.speed(),
            config.moderation.classifier(),
            config.loras,
        )
        for device in config.engine.devices
    ]


def build_events(
    config: Config, sessions: async_sessionmaker[AsyncSession], blobs: Blobs
) -> JobEvents:
    """In-process events on SQLite (one process); on PostgreSQL, events every process
    sharing the database hears, followed at the progress edit interval, previews
    through the blob store."""
    store = EventStore(sessions)
    if not store.shared:
        return JobEvents()
    return SharedEvents(store, blobs, config.discord.progress_interval)


def build_service(
    config: Config,
    sessions: async_sessionmaker[AsyncSession],
    quotas: QuotaStore,
    engines: list[EngineProcess],
) -> JobService:
    blobs = open_blobs(config.storage)
    return JobService(
        store=JobStore(sessions, quotas.rules.pricing),
        data_dir=config.storage.data_dir,
        engines=engines,
        job_timeout=config.engine.job_timeout,
        models=config.models,
        default_model=config.engine.default_model,
        preview_every=config.generation.preview_every,
        quotas=quotas,
        queue=config.queue,
        batch_images={d: config.engine.batch_images(d) for d in config.engine.devices},
        moderation=config.moderation,
        worker=config.worker,
        cache=CacheStore(sessions) if config.cache.enabled else None,
        events=build_events(config, sessions, blobs),
        blobs=blobs,
        loras=config.loras,
    )


async def open_database(config: Config) -> AsyncEngine:
    backup = await upgrade_async(config.database_url)
    if backup is not None:
        log.info("database migrated; the previous version is kept at %s", backup)
    return open_engine(config.database_url)


def on_signals(stop: asyncio.Event) -> Callable[[], None]:
    """SIGINT and SIGTERM set `stop`; the returned function puts the handlers back."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    def restore() -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)

    return restore
