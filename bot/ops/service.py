"""Operations: metrics, health, status, alerts and the download log, built once in
bot.app and started and stopped by it, with the HTTP server for /metrics and /healthz.

The server runs on the bot's own event loop (aiohttp, already a dependency),
on loopback unless `[metrics] host` says otherwise: metrics name models and
routes, nothing a stranger needs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import discord
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..config import Config
from ..jobs.engine_client import EngineProcess
from ..store.health import DatabaseHeartbeat, HealthStore
from .alerts import Alerts
from .discord_http import discord_trace
from .downloads import DownloadWatch
from .facts import OpsQueries
from .health import HealthCheck, free_bytes
from .metrics import Metrics
from .status import StatusReport

log = logging.getLogger(__name__)

HEARTBEAT_SERVICE = "bot"


class MetricsUnavailable(Exception):
    """The metrics port cannot be opened; worded as one line for the admin."""


class Operations:
    def __init__(
        self,
        config: Config,
        sessions: async_sessionmaker[AsyncSession],
        engines: Sequence[EngineProcess],
    ) -> None:
        self._config = config
        self._client: discord.Client | None = None
        self._delivery_retries: Callable[[], int] = lambda: 0
        self.queries = OpsQueries(sessions)
        self.metrics = Metrics(
            self.queries,
            engines,
            lambda: self._delivery_retries(),
            self.discord_connected,
            self.disk_free,
        )
        # Written on a timer while /healthz is served; a probe only reads it.
        self._heartbeat = DatabaseHeartbeat(HealthStore(sessions), HEARTBEAT_SERVICE)
        self.health = HealthCheck(
            engines,
            self._heartbeat,
            config.storage.data_dir,
            config.storage.min_free_gb,
            self.discord_connected,
        )
        self.status = StatusReport(self.queries, engines)
        self.alerts = Alerts(
            config.alerts,
            self.queries,
            engines,
            self.disk_free,
            config.storage.min_free_gb,
            self._post_alert,
        )
        # For discord.py's HTTP session: counts every REST answer by route.
        self.discord_trace = discord_trace(self.metrics.discord_response)
        self.downloads = DownloadWatch(config.models)
        self._runner: web.AppRunner | None = None
        self._failing: tuple[str, ...] = ()

    def attach(self, client: discord.Client, delivery_retries: Callable[[], int]) -> None:
        self._client = client
        self._delivery_retries = delivery_retries

    def discord_connected(self) -> bool:
        client = self._client
        if client is None or client.is_closed() or not client.is_ready():
            return False
        socket: Any = getattr(client, "ws", None)
        return bool(socket is not None and socket.open)

    def disk_free(self) -> int:
        return free_bytes(self._config.storage.data_dir)

    async def _post_alert(self, message: str) -> None:
        channel_id = self._config.alerts.channel_id
        if self._client is None or channel_id is None:
            raise RuntimeError("no Discord client or no [alerts] channel_id")
        channel = self._client.get_partial_messageable(channel_id)
        await channel.send(message, allowed_mentions=discord.AllowedMentions.none())

    # -- start and stop -------------------------------------------------------------------

    async def start(self) -> None:
        """Count from now on and, with `[metrics] enabled`, serve /metrics and /healthz."""
        await self.metrics.start()
        self.downloads.start()
        settings = self._config.metrics
        if not settings.enabled:
            return
        await self._heartbeat.start()
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port)
        try:
            await site.start()
        except OSError as error:
            await runner.cleanup()
            await self._heartbeat.stop()
            raise MetricsUnavailable(
                f"[metrics] cannot listen on {settings.host}:{settings.port} ({error.strerror});"
                " set another [metrics] port"
            ) from None
        self._runner = runner
        host, port = runner.addresses[0][:2]
        log.info("metrics on http://%s:%s/metrics, health on /healthz", host, port)

    def start_alerts(self) -> None:
        """Once Discord is connected (alerts are posted there)."""
        self.alerts.start()

    async def stop(self) -> None:
        await self.alerts.stop()
        await self.downloads.stop()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        await self._heartbeat.stop()

    # -- HTTP -----------------------------------------------------------------------------

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        health = await self.health.run()
        failing = tuple(check.name for check in health.failing)
        if failing != self._failing:  # logged as it changes, not at every probe
            self._failing = failing
            if failing:
                log.warning(
                    "health check failing: %s",
                    "; ".join(f"{c.name}: {c.detail}" for c in health.failing),
                )
            else:
                log.info("health check passes again")
        return web.Response(
            text=json.dumps(health.as_json()),
            status=200 if health.ok else 503,
            content_type="application/json",
        )
