"""Wiring: build every service once, start them in order, stop them in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .blobs import open_blobs
from .config import Config
from .core import Core
from .core.deliveries import Deliveries, front_door_id
from .discord.admin_log import AdminLog
from .discord.bot import AtelierBot
from .discord.cogs.admin import AdminCog
from .discord.cogs.apikey import ApiKeyCog
from .discord.cogs.imagine import ImagineCog
from .discord.cogs.jobs import JobsCog
from .discord.cogs.member import MemberCog
from .discord.cogs.scope import ScopeCog
from .discord.common import Services
from .discord.delivery import Delivery
from .discord.endpoints import use_endpoints
from .discord.moderation import ModerationNotices
from .discord.replies import ResultReplies
from .http.server import HttpApi
from .http.services import ApiServices
from .jobs.service import JobService
from .moderation.service import Moderation, Notify
from .ops.discord_http import unreachable
from .ops.service import Operations
from .reports.console import AdminReports
from .store.api_keys import ApiKeyStore
from .store.audit import AuditLog
from .store.commands import CommandStore
from .store.db import session_factory
from .store.editor_links import LinkStore
from .store.events import EventStore
from .store.guilds import GuildStore
from .store.health import HealthStore
from .store.quotas import QuotaRules, QuotaStore
from .store.retention import RetentionSweeper
from .store.users import UserStore
from .wiring import build_engines, build_service, on_signals, open_database

log = logging.getLogger(__name__)

# At a stop, how long a closed Discord client may take to end its connection.
CLOSE_SECONDS = 2.0
# At a stop, how long deliveries under way may take past the batch's grace.
DELIVERY_SECONDS = 5.0


async def stop_work(service: JobService, http: HttpApi | None, grace: float) -> float:
    """The first part of a stop, within one `grace`: claim nothing more, give the HTTP API's
    waiting requests their answers (cut off, their jobs cancelled and refunded, when the
    grace ends), then give running batches what is left of it before they are put back in
    the queue. Returns the seconds of the grace still left."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    service.stop_claiming()
    if http is not None:
        await http.stop()
    await service.stop(max(0.0, deadline - loop.time()))
    return max(0.0, deadline - loop.time())


class DiscordUnreachable(Exception):
    """Discord could not be reached at start; the message says what to check."""


def build_moderation(
    config: Config, sessions: async_sessionmaker[AsyncSession], notify: Notify | None = None
) -> Moderation:
    """Moderation on its own stores; `notify` tells the admins (None: the log only)."""
    users = UserStore(sessions, open_blobs(config.storage))
    return Moderation(config.moderation, GuildStore(sessions), users, AuditLog(sessions), notify)


def build_http(
    config: Config,
    sessions: async_sessionmaker[AsyncSession],
    service: JobService,
    quotas: QuotaStore,
    keys: ApiKeyStore,
    moderation: Moderation,
    core: Core,
) -> HttpApi:
    """The HTTP API on `service` and `core`, listening to its jobs; where the core serves
    the Vary (Region) editor (with the bot's Discord), its pages too."""
    http = HttpApi(
        ApiServices(
            config=config,
            jobs=service,
            core=core,
            keys=keys,
            users=UserStore(sessions, service.blobs),
            quotas=quotas,
            moderation=moderation,
            health=HealthStore(sessions),
        )
    )
    service.add_listener(http.watch)
    return http


def build_core(
    config: Config,
    sessions: async_sessionmaker[AsyncSession],
    service: JobService,
    moderation: Moderation,
    quotas: QuotaStore,
) -> Core:
    """The core on its own stores, for the HTTP API served without Discord."""
    return Core.build(
        config=config,
        jobs=service,
        users=UserStore(sessions, service.blobs),
        moderation=moderation,
        commands=CommandStore(sessions),
        quotas=quotas,
        links=LinkStore(sessions),
    )


async def run_bot(config: Config, token: str) -> None:
    database = await open_database(config)
    sessions = session_factory(database)
    quotas = QuotaStore(sessions, QuotaRules.from_config(config))
    engines = build_engines(config)
    ops = Operations(config, sessions, engines)
    service = build_service(config, sessions, quotas, engines)
    use_endpoints(config.discord)
    client = AtelierBot(config.discord, ops.discord_trace)
    users = UserStore(sessions, service.blobs)
    admin_log = AdminLog(client, config.moderation.log_channel_id)
    delivery = Delivery(
        client=client,
        deliveries=Deliveries(service.store, EventStore(sessions), front_door_id()),
        blobs=service.blobs,
        interval=config.discord.progress_interval,
        queue_place=service.queue_place,
        prefers_dm=users.prefers_dm,
        moderation=ModerationNotices(client, admin_log),
    )
    service.add_listener(delivery)
    service.add_listener(ops.metrics)
    ops.attach(client, lambda: delivery.retries)
    keys = ApiKeyStore(sessions)
    moderation = build_moderation(config, sessions, admin_log)
    commands = CommandStore(sessions)
    core = Core.build(
        config=config,
        jobs=service,
        users=users,
        moderation=moderation,
        commands=commands,
        quotas=quotas,
        links=LinkStore(sessions),
        replies=ResultReplies(client),
    )
    http = (
        build_http(config, sessions, service, quotas, keys, moderation, core)
        if config.http.enabled
        else None
    )
    services = Services(
        config=config,
        jobs=service,
        core=core,
        users=users,
        quotas=quotas,
        guilds=GuildStore(sessions),
        reports=AdminReports(sessions, config),
        delivery=delivery,
        commands=commands,
        keys=keys,
        status=ops.status,
        moderation=moderation,
    )
    imagine = ImagineCog(client, services)
    job_buttons = JobsCog(client, services)
    stop = asyncio.Event()
    restore_signals = on_signals(stop)
    grace = config.queue.stop_grace_seconds
    sweeper = RetentionSweeper(sessions, service.blobs, config.storage.retention_days)
    try:
        await service.start()
        await ops.start()
        sweeper.start()
        if http is not None:
            await http.start()
        async with client:
            for cog in (
                ScopeCog(client, services),
                imagine,
                job_buttons,
                MemberCog(services),
                AdminCog(client, services),
                ApiKeyCog(services),
            ):
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
                # Answers another front door left undelivered (it died), and those whose
                # end a dropped connection to the database missed.
                service.events.catch_up_with(delivery.redeliver)
                await imagine.replay_pending()
                await job_buttons.replay_pending()
                service.start_workers()
                ops.start_alerts()
                done, _ = await asyncio.wait(
                    {connection, stopping}, return_when=asyncio.FIRST_COMPLETED
                )
            ready.cancel()
            stopping.cancel()
            if connection in done:
                try:
                    connection.result()  # a login failure surfaces here
                except (aiohttp.ClientConnectionError, TimeoutError) as error:
                    raise DiscordUnreachable(unreachable(config.discord.api_base, error)) from None
            else:
                log.info("stopping: no new jobs; a running batch has %g s to finish", grace)
                left = await stop_work(service, http, grace)
                # Deliveries under way get what is left of the grace and a few seconds
                # more; without a connection, none. A finished job not delivered now is
                # delivered at the next start, so the stop never waits longer.
                await delivery.drain(
                    within=left + DELIVERY_SECONDS if ops.discord_connected() else 0
                )
                await client.close()
                # A reconnecting client notices the close only once it has slept out its
                # backoff (minutes, after a long outage): it is not waited for.
                await asyncio.wait({connection}, timeout=CLOSE_SECONDS)
                connection.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await connection
    finally:
        restore_signals()
        if http is not None:
            await http.stop()
        await ops.stop()
        await sweeper.stop()
        await service.stop()
        await delivery.close()
        await admin_log.close()
        await database.dispose()


async def serve_http(config: Config) -> None:
    """`atelier serve`: the HTTP API and the engines alone, no Discord (keys are made in
    Discord by `atelier run`, on the same database)."""
    database = await open_database(config)
    sessions = session_factory(database)
    quotas = QuotaStore(sessions, QuotaRules.from_config(config))
    service = build_service(config, sessions, quotas, build_engines(config))
    moderation = build_moderation(config, sessions)
    http = build_http(
        config,
        sessions,
        service,
        quotas,
        ApiKeyStore(sessions),
        moderation,
        build_core(config, sessions, service, moderation, quotas),
    )
    sweeper = RetentionSweeper(sessions, service.blobs, config.storage.retention_days)
    stop = asyncio.Event()
    restore_signals = on_signals(stop)
    grace = config.queue.stop_grace_seconds
    try:
        await service.start()
        sweeper.start()
        await http.start()
        service.start_workers()  # nothing to wait for: no Discord delivers here
        await stop.wait()
        log.info("stopping: no new requests; a running batch has %g s to finish", grace)
        await stop_work(service, http, grace)
    finally:
        restore_signals()
        await http.stop()
        await sweeper.stop()
        await service.stop()
        await database.dispose()
