"""Who a request's key acts as: resolved once per request by a middleware, for every
route but those the route table marks public, and read by handlers with `holder_of`."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ..core.door import barred_by
from ..core.views import KeyHolder, utcnow
from ..moderation.rate import Buckets
from .errors import ApiError, logged_path
from .refusals import api_error
from .services import CLIENT, ApiServices
from .translate import retry_after

# Where a request keeps the member its key acts as, once known.
HOLDER = web.RequestKey("holder", KeyHolder)


def holder_of(request: web.Request) -> KeyHolder:
    """The member the request's key acts as (set by the middleware on every route that is
    not public)."""
    return request[HOLDER]


def request_rate(services: ApiServices) -> Buckets:
    """Per key, all requests alike; a burst of a minute's worth (0: no limit)."""
    per_minute = services.config.http.requests_per_minute
    return Buckets("key", burst=per_minute, per_minute=per_minute)


def key_middleware(
    services: ApiServices, rate: Buckets, public: Collection[web.AbstractRoute]
) -> Middleware:
    """Authenticates every request to a route not in `public` (within `rate`); a path or
    method with no route goes on to its own 404 or 405 without a key."""

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        match = request.match_info
        if match.http_exception is None and match.route not in public:
            await _member(services, rate, request)
        return await handler(request)

    return authenticate


async def _member(services: ApiServices, rate: Buckets, request: web.Request) -> KeyHolder:
    """Who the request's key acts as: 401 without a valid key, 403 for a ban or a timed
    pause, 429 over the key's request rate."""
    header = request.headers.get("Authorization", "").strip()
    key = header[7:].strip() if header[:7].lower() == "bearer " else header
    if not key:
        raise ApiError(
            401,
            "unauthorized",
            "Authorization: missing; send `Authorization: Bearer <key>`"
            " (make a key in Discord with /apikey create)",
        )
    holder = await services.keys.authenticate(key)
    if holder is None:
        raise ApiError(401, "unauthorized", "Authorization: the API key is unknown or revoked")
    paused_until = await services.users.cooldown_until(holder.user_id)
    standing = barred_by(holder.ban_reason, paused_until)
    if standing is not None:
        await services.jobs.store.record_refusal(
            "http.refused",
            holder.user_id,
            holder.guild_id,
            None,
            standing.plain(),
            params={"client": CLIENT, "key_id": holder.key_id, "path": logged_path(request)},
            kind=standing.kind.value,
        )
        raise api_error(standing, utcnow())
    # Known before the rate is checked, so a refusal after this point names its member.
    request[HOLDER] = holder
    limited = rate.acquire(holder.key_id, asyncio.get_running_loop().time())
    if limited is not None:
        per_minute = services.config.http.requests_per_minute
        raise ApiError(
            429,
            "rate_limited",
            f"Authorization: this key made its {per_minute} requests a minute; wait a moment",
            {"Retry-After": retry_after(limited.retry_after)},
        )
    return holder


async def audit_refusal(services: ApiServices, request: web.Request, error: ApiError) -> None:
    """A member's request refused for what it asked (bad input, unknown engine or job,
    a full queue), audited like a refused command. Not audited here: requests with
    no valid key (no member to name), the rate limit (a flood would become writes),
    bans, quotas and the core's refusals (audited where they are decided)."""
    holder = request.get(HOLDER)
    if holder is None or error.audited or error.name in ("rate_limited", "permission_denied"):
        return
    if error.name == "quota_exceeded":
        return
    await services.jobs.store.record_refusal(
        "http.refused",
        holder.user_id,
        holder.guild_id,
        None,
        error.message,
        params={
            "client": CLIENT,
            "key_id": holder.key_id,
            "path": logged_path(request),
            "status": error.status,
            "name": error.name,
        },
    )
