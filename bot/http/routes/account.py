"""Stability v1's engines and user routes: the configured models, and the account and
balance of the key's member."""

from __future__ import annotations

from aiohttp import web

from ..answers import json_response
from ..auth import holder_of
from ..errors import error_replies
from ..models import Account, Balance, Engine, EngineList, Organization
from ..openapi import Operation, Reply
from ..services import services_of

# `credits` when nothing limits spending (JSON has no infinity).
UNLIMITED_CREDITS = 1e9


async def list_engines(request: web.Request) -> web.Response:
    models = services_of(request).config.models
    engines = [
        Engine(
            id=name,
            name=name,
            description=f"Atelier model `{name}`: {model.width}x{model.height},"
            f" {model.steps} steps, {model.sampler} by default",
        )
        for name, model in sorted(models.items())
    ]
    return json_response(EngineList(engines))


async def account(request: web.Request) -> web.Response:
    holder = holder_of(request)
    organizations = (
        [
            Organization(
                id=str(holder.guild_id),
                name=f"Discord server {holder.guild_id}",
                role="MEMBER",
                is_default=True,
            )
        ]
        if holder.guild_id is not None
        else []
    )
    return json_response(
        Account(
            id=str(holder.user_id),
            name=holder.user_name,
            email="",
            organizations=organizations,
            key_id=holder.key_id,
        )
    )


async def balance(request: web.Request) -> web.Response:
    holder = holder_of(request)
    left = await services_of(request).core.queries.balance(holder.user_id, holder.role_ids)
    return json_response(
        Balance(
            credits=UNLIMITED_CREDITS if left.credits is None else left.credits,
            currency=left.currency,
            unlimited=left.credits is None,
            images_left=left.images_left,
            gpu_seconds_left=left.gpu_seconds_left,
            resets_at=left.resets_at,
        )
    )


_READ_ERRORS = error_replies(401, 403, 429, 500)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        method="GET",
        path="/v1/engines/list",
        operation_id="listEngines",
        summary="The configured models, as engines",
        tag="v1/engines",
        handler=list_engines,
        replies={200: Reply("The engines", EngineList), **_READ_ERRORS},
    ),
    Operation(
        method="GET",
        path="/v1/user/account",
        operation_id="userAccount",
        summary="The member the key acts as",
        tag="v1/user",
        handler=account,
        replies={200: Reply("The account", Account), **_READ_ERRORS},
    ),
    Operation(
        method="GET",
        path="/v1/user/balance",
        operation_id="userBalance",
        summary="What is left of today's quota",
        tag="v1/user",
        handler=balance,
        replies={200: Reply("The balance", Balance), **_READ_ERRORS},
    ),
)
