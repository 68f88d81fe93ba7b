"""Discord's REST answers, counted by route: an aiohttp trace config handed to discord.py.

discord.py takes an `http_trace` (aiohttp.TraceConfig) for its HTTP session, so
every request it makes, retries after a 429 included, is seen here without
patching the library. A route is the URL's path with ids and tokens replaced
(`/webhooks/{id}/{token}/messages/@original`): few enough label values for
Prometheus, and no interaction token ever becomes a label.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from types import SimpleNamespace

import aiohttp
import yarl

_API_PREFIX = re.compile(r"^.*?/api/v\d+")
# Path words Discord's routes are made of; anything else is an id, a token or an emoji.
_WORD = re.compile(r"@?[a-z][a-z\-]{0,30}")

Observe = Callable[[str, str, int | None], None]


def route_of(url: yarl.URL | str) -> str:
    path = _API_PREFIX.sub("", yarl.URL(url).path) or "/"
    parts = []
    for part in path.split("/"):
        if not part or _WORD.fullmatch(part):
            parts.append(part)
        elif part.isdigit():
            parts.append("{id}")
        else:
            parts.append("{token}")
    return "/".join(parts)


def discord_trace(observe: Observe) -> aiohttp.TraceConfig:
    """A trace config that calls `observe(method, route, status)` for each answer
    (status None when the request failed on the network)."""
    trace = aiohttp.TraceConfig()

    async def on_end(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        observe(params.method, route_of(params.url), params.response.status)

    async def on_exception(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestExceptionParams,
    ) -> None:
        observe(params.method, route_of(params.url), None)

    trace.on_request_end.append(on_end)
    trace.on_request_exception.append(on_exception)
    return trace


def unreachable(base: str, error: BaseException) -> str:
    """One line for an admin: which Discord address did not answer, why, what to check."""
    if isinstance(error, aiohttp.ClientConnectorDNSError):
        why = f"no DNS answer for {yarl.URL(base).host}"
    elif isinstance(error, aiohttp.ClientConnectorError) and isinstance(
        error.os_error, ConnectionRefusedError
    ):
        why = "connection refused"
    elif isinstance(error, TimeoutError):
        why = "no answer in time"
    else:
        why = str(error) or type(error).__name__
    return (
        f"could not reach Discord at {base} ({why}): check this machine's network,"
        " DNS, firewall or proxy, and [discord] api_base"
    )
