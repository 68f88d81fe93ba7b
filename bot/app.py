"""Wiring: build every service once, start them in order, stop them in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

from .config import Config
from .discord.admin_log import AdminLog
from .discord.bot import AtelierBot
from .discord.cogs.admin import AdminCog
from .discord.cogs.imagine import ImagineCog
from .discord.cogs.jobs import JobsCog
from .discord.cogs.member import MemberCog
from .discord.cogs.scope import ScopeCog
from .discord.common import Services
from .discord.delivery import Delivery
from .discord.endpoints import use_endpoints
from .jobs.engine_client import EngineProcess
from .jobs.service import JobService
from .moderation.service import Moderation
from .reports.console import AdminReports
from .store.commands import CommandStore
from .store.db import open_engine, session_factory
from .store.guilds import GuildStore
from .store.jobs import JobStore
from .store.migrate import upgrade_async
from .store.quotas import QuotaRules, QuotaStore
from .store.retention import RetentionSweeper
from .store.users import UserStore

log = logging.getLogger(__name__)

SECRET_VARIABLES = ("DISCORD_TOKEN",)


def engine_environment() -> dict[str, str]:
    """The engine's environment: the bot's, minus secrets it has no use for."""
    return {key: value for key, value in os.environ.items() if key not in SECRET_VARIABLES}


def build_engines(config: Config) -> list[EngineProcess]:
    env = engine_environment()
    return [
        EngineProcess(device, config.models, env, config.engine.model_memory_gb)
        for device in config.engine.devices
    ]


async def run_bot(config: Config, token: str) -> None:
    backup = await upgrade_async(config.database_url)
    if backup is not None:
        log.info("database migrated; the previous version is kept at %s", backup)
    database = open_engine(config.database_url)
    sessions = session_factory(database)
    quotas = QuotaStore(sessions, QuotaRules.from_config(config))
    service = JobService(
        JobStore(sessions, quotas.rules.pricing),
        config.storage.data_dir,
        build_engines(config),
        config.engine.job_timeout,
        config.models,
        config.engine.default_model,
        config.generation.preview_every,
        quotas=quotas,
        queue=config.queue,
        max_batch_images=config.engine.batch_images,
    )
    use_endpoints(config.discord)
    client = AtelierBot(config.discord)
    delivery = Delivery(
        client, service.store, config.storage.data_dir, config.discord.progress_interval,
        service.queue_place,
    )  # fmt: skip
    service.add_listener(delivery)
    users = UserStore(sessions, config.storage.data_dir)
    guilds = GuildStore(sessions)
    reports = AdminReports(sessions, config)
    admin_log = AdminLog(client, config.moderation.log_channel_id)
    services = Services(
        config=config,
        jobs=service,
        users=users,
        quotas=quotas,
        guilds=guilds,
        reports=reports,
        delivery=delivery,
        commands=CommandStore(sessions),
        moderation=Moderation(config.moderation, guilds, users, reports.audit, admin_log),
    )
    imagine = ImagineCog(client, services)
    job_buttons = JobsCog(client, services)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    grace = config.queue.stop_grace_seconds
    sweeper = RetentionSweeper(sessions, config.storage.data_dir, config.storage.retention_days)
    try:
        await service.start()
        sweeper.start()
        async with client:
            for cog in (
                ScopeCog(client, services), imagine, job_buttons, MemberCog(services),
                AdminCog(services),
            ):  # fmt: skip
                await client.add_cog(cog)
            connection = asyncio.create_task(client.start(token), name="discord-connection")
            stopping = asyncio.create_task(stop.wait(), name="stop-signal")
            ready = asyncio.create_task(client.wait_until_ready(), name="discord-ready")
            done, _ = await asyncio.wait(
                {connection, stopping, ready}, return_when=asyncio.FIRST_COMPLETED
            )
            if ready in done:
                # Only a connected client can deliver: workers start now, not before.
                await delivery.redeliver()
                await imagine.replay_pending()
                await job_buttons.replay_pending()
                service.start_workers()
                done, _ = await asyncio.wait(
                    {connection, stopping}, return_when=asyncio.FIRST_COMPLETED
                )
            ready.cancel()
            stopping.cancel()
            if connection in done:
                connection.result()  # a login failure surfaces here
            else:
                log.info("stopping: no new jobs; a running batch has %g s to finish", grace)
                await service.stop(grace)
                await delivery.drain(within=grace + 15)
                await client.close()
                with contextlib.suppress(asyncio.CancelledError):
                    await connection
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await sweeper.stop()
        await service.stop()
        await delivery.close()
        await admin_log.close()
        await database.dispose()
