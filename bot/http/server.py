"""The HTTP API: Stability's REST API v1 and a small job API, on the same job service as
Discord. HttpApi builds the application from the route table and starts and stops it.

A request's key acts as its member: the same admission (bans, timed pauses, quotas
of their roles as kept with the key), the same fair queue and batches, the same
blocklist (the config's and that of the server the key was made in, with strikes),
ledger and audit, with the client recorded as
`http` and the key's id. An HTTP job never waits for anything Discord does: its
answer is read from the stored job, by the request that waits for it or by
`GET /v1/jobs/{id}`.

The pieces: auth (who a key acts as), errors (the error shape and its middleware),
bodies (reading a request), admission (from a body to a queued job), waiting (a
synchronous request's job), answers (what is said about a job) and routes (the thin
handlers and the table they are served and documented from).
"""

from __future__ import annotations

import logging
from functools import partial

from aiohttp import web

from ..core.services import DatabaseHeartbeat
from .auth import audit_refusal, key_middleware, request_rate
from .editor import add_editor_routes
from .errors import AccessLog, error_middleware
from .routes import OPERATIONS, api_document
from .routes.health import DOCUMENT, HEARTBEAT, openapi
from .services import CLIENT, SERVICES, ApiServices
from .waiting import SYNCHRONOUS, JobWatch, SynchronousJobs

log = logging.getLogger(__name__)


class CannotListen(Exception):
    """The configured address is taken, or not this machine's."""


class HttpApi:
    """The aiohttp server; `start` and `stop` are called by bot.app with the bot's own."""

    def __init__(self, services: ApiServices) -> None:
        self._services = services
        self._config = services.config
        self.watch = JobWatch()
        self._synchronous = SynchronousJobs(
            services.jobs, self.watch, services.config.http.wait_seconds
        )
        self._rate = request_rate(services)
        self._document = api_document(sorted(services.config.models))
        # Written on a timer while the API listens; /healthz only reads it.
        self._heartbeat = DatabaseHeartbeat(services.health, CLIENT)
        self._runner: web.AppRunner | None = None
        self.url = ""

    def application(self) -> web.Application:
        services = self._services
        app = web.Application(client_max_size=int(self._config.http.max_body_mb * 2**20))
        app[SERVICES] = services
        app[SYNCHRONOUS] = self._synchronous
        app[HEARTBEAT] = self._heartbeat
        app[DOCUMENT] = self._document
        # Every route needs a key but those marked here: a new route is guarded unless
        # its operation says `auth=False`.
        public: set[web.AbstractRoute] = set()
        for operation in OPERATIONS:
            route = app.router.add_route(operation.method, operation.path, operation.handler)
            if not operation.auth:
                public.add(route)
        public.update(app.router.add_get("/openapi.json", openapi).resource or ())  # and HEAD
        if services.core.editor.served:  # with Discord to answer, and a public address
            public.update(add_editor_routes(app))
        app.middlewares.extend(
            [
                error_middleware(self._config.http.max_body_mb, partial(audit_refusal, services)),
                key_middleware(services, self._rate, public),
            ]
        )
        return app

    async def start(self) -> None:
        """Cancel the jobs of synchronous requests a stop cut off, then listen."""
        await self._synchronous.cancel_orphans()
        await self._heartbeat.start()
        # A client that disconnects cancels its handler, and so its job. At a stop,
        # waiting requests get the same grace as a running batch before that.
        self._runner = web.AppRunner(
            self.application(),
            handler_cancellation=True,
            shutdown_timeout=self._config.queue.stop_grace_seconds,
            access_log_class=AccessLog,
        )
        await self._runner.setup()
        http = self._config.http
        site = web.TCPSite(self._runner, http.host, http.port)
        try:
            await site.start()
        except OSError as error:
            await self.stop()
            raise CannotListen(
                f"cannot serve the HTTP API on {http.host}:{http.port}: {error.strerror or error}"
                " (see [http] host and port)"
            ) from error
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        log.info(
            "HTTP API listening on %s (OpenAPI document at %s/openapi.json)", self.url, self.url
        )

    async def stop(self) -> None:
        """Stop listening. Waiting requests have `[queue] stop_grace_seconds` to get their
        answer; then they are cut off, and their jobs cancelled and refunded in full."""
        runner, self._runner = self._runner, None
        await self._synchronous.stop(runner)
        await self._heartbeat.stop()
