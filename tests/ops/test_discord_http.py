"""Discord's REST answers counted by route, through discord.py's own HTTP trace hook."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from bot.ops.discord_http import discord_trace, route_of
from bot.ops.metrics import Metrics


def test_routes_keep_words_and_hide_ids_and_tokens() -> None:
    base = "https://discord.com/api/v10"
    assert route_of(f"{base}/channels/1234567890/messages") == "/channels/{id}/messages"
    assert (
        route_of(f"{base}/webhooks/42/aW50ZXJhY3Rpb246MTIzNDU2Nzg5MDpzZWNyZXQ/messages/@original")
        == "/webhooks/{id}/{token}/messages/@original"
    )
    assert route_of(f"{base}/interactions/42/tok-En.x_9/callback") == (
        "/interactions/{id}/{token}/callback"
    )
    assert route_of("http://127.0.0.1:5000/api/v10/users/@me") == "/users/@me"


@pytest.fixture
async def discord_like() -> AsyncIterator[str]:
    async def limited(request: web.Request) -> web.Response:
        return web.json_response({"retry_after": 0.1}, status=429)

    async def broken(request: web.Request) -> web.Response:
        return web.json_response({"message": "oops"}, status=502)

    async def fine(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.router.add_patch("/api/v10/channels/{id}/messages/{m}", limited)
    app.router.add_post("/api/v10/channels/{id}/messages", broken)
    app.router.add_get("/api/v10/users/@me", fine)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}/api/v10"
    await runner.cleanup()


async def test_429s_errors_and_network_failures_are_counted_by_route(
    discord_like: str, tmp_path: object
) -> None:
    metrics = Metrics(queries=None, engines=[])  # type: ignore[arg-type]
    async with aiohttp.ClientSession(trace_configs=[discord_trace(metrics.discord_response)]) as s:
        for _ in range(2):
            async with s.patch(f"{discord_like}/channels/1/messages/2"):
                pass
        async with s.post(f"{discord_like}/channels/1/messages"):
            pass
        async with s.get(f"{discord_like}/users/@me"):
            pass
        with pytest.raises(aiohttp.ClientError):
            async with s.get("http://127.0.0.1:9/api/v10/gateway/bot"):
                pass
    from prometheus_client import generate_latest

    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for sample in family.samples
    }
    route = "/channels/{id}/messages/{id}"
    assert (
        samples[("atelier_discord_rate_limits_total", (("method", "PATCH"), ("route", route)))] == 2
    )
    errors = "atelier_discord_api_errors_total"
    posted = (("method", "POST"), ("route", "/channels/{id}/messages"), ("status", "502"))
    assert samples[(errors, posted)] == 1
    offline = (("method", "GET"), ("route", "/gateway/bot"), ("status", "network"))
    assert samples[(errors, offline)] == 1
    assert sum(v for (n, _), v in samples.items() if n == errors) == 2  # 200s and 429s are not
    assert (
        samples[("atelier_discord_requests_total", (("method", "GET"), ("route", "/users/@me")))]
        == 1
    )
