"""The routes that need no key: health (engines alive, database writable) and the
OpenAPI document."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ...core.services import DatabaseHeartbeat
from ..answers import json_response
from ..models import EngineHealth, Health
from ..openapi import Operation, Reply
from ..services import services_of

# Written on a timer while the API listens; /healthz only reads it.
HEARTBEAT = web.AppKey("heartbeat", DatabaseHeartbeat)
# The OpenAPI document, made once when the API is built.
DOCUMENT = web.AppKey("document", dict[str, Any])


async def healthz(request: web.Request) -> web.Response:
    database = await request.app[HEARTBEAT].health()
    engines = [
        EngineHealth(
            device=device,
            alive=status is not None,
            running_job=status.running_jobs[0] if status and status.running_jobs else None,
            loaded=[model.name for model in status.loaded] if status else [],
        )
        for device, status in await services_of(request).jobs.engine_status()
    ]
    ok = database.writable
    health = Health(status="ok" if ok else "error", database=database.detail, engines=engines)
    return json_response(health, 200 if ok else 503)


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[DOCUMENT])


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        method="GET",
        path="/healthz",
        operation_id="health",
        summary="Engine alive, database writable",
        tag="health",
        handler=healthz,
        replies={200: Reply("Healthy", Health), 503: Reply("Unhealthy", Health)},
        auth=False,
    ),
)
