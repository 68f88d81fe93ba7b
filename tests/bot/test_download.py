"""Capped attachment downloads, against real HTTP servers on 127.0.0.1.

The servers misbehave on purpose: bodies far over the cap, with and without a
Content-Length, a Content-Length that lies, a gzip bomb. Each records how many
bytes it managed to send, to show the download stopped early.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.jobs.download import download_attachments, download_capped
from bot.jobs.spec import BadInput

CAP = 2**20
HUGE = 30 * 2**20
CHUNK = 64 * 1024
# Loopback socket buffers (both ends) can absorb a few MB after the client stops reading.
EARLY = 12 * 2**20
UNAVAILABLE = "I could not download the `{role}` attachment from Discord; please attach it again."


@dataclass
class Sent:
    """Bytes each streaming route managed to write before the client hung up."""

    by_route: dict[str, int] = field(default_factory=dict)


async def stream(request: web.Request, response: web.StreamResponse, sent: Sent) -> None:
    await response.prepare(request)
    route = request.path
    sent.by_route[route] = 0
    try:
        while sent.by_route[route] < HUGE:
            await response.write(bytes(CHUNK))
            sent.by_route[route] += CHUNK
    except (ConnectionError, asyncio.CancelledError):
        pass  # the client hung up: what we want


def application(sent: Sent) -> web.Application:
    async def small(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 1000, content_type="image/png")

    async def exactly_the_cap(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * CAP, content_type="image/png")

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await stream(request, response, sent)
        return response

    async def declared(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = HUGE
        await stream(request, response, sent)
        return response

    async def gzip_bomb(request: web.Request) -> web.Response:
        response = web.Response(body=gzip.compress(bytes(HUGE)), content_type="image/png")
        response.headers["Content-Encoding"] = "gzip"
        return response

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/small.png", small)
    app.router.add_get("/cap.png", exactly_the_cap)
    app.router.add_get("/chunked.png", chunked)
    app.router.add_get("/declared.png", declared)
    app.router.add_get("/gzip.png", gzip_bomb)
    app.router.add_get("/missing.png", missing)
    return app


@pytest.fixture
async def server() -> AsyncIterator[tuple[TestServer, Sent]]:
    sent = Sent()
    async with TestServer(application(sent), host="127.0.0.1") as running:
        yield running, sent


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


class LyingServer:
    """A raw HTTP server whose Content-Length is not what it sends."""

    def __init__(self, declared: int, body: int) -> None:
        self.declared, self.body, self.sent = declared, body, 0

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/image.png"

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {self.declared}\r\n\r\n"
        try:
            writer.write(head.encode())
            while self.sent < self.body:
                writer.write(bytes(min(CHUNK, self.body - self.sent)))
                await writer.drain()
                self.sent += CHUNK
            writer.close()
            await writer.wait_closed()
        except ConnectionError:
            pass


async def test_a_small_attachment_downloads_whole(
    server: tuple[TestServer, Sent], session: aiohttp.ClientSession
) -> None:
    running, _ = server
    url = str(running.make_url("/small.png"))
    assert await download_capped(session, url, "image", CAP) == b"x" * 1000
    assert (
        len(await download_capped(session, str(running.make_url("/cap.png")), "mask", CAP)) == CAP
    )


async def test_a_declared_size_over_the_cap_is_refused_without_reading_the_body(
    server: tuple[TestServer, Sent], session: aiohttp.ClientSession
) -> None:
    running, sent = server
    with pytest.raises(BadInput) as raised:
        await download_capped(session, str(running.make_url("/declared.png")), "image", CAP)
    assert str(raised.value) == "The `image` attachment is 30.0 MB; the limit is 1 MB."
    await asyncio.sleep(0.2)  # let the server notice the hang-up
    assert sent.by_route["/declared.png"] < EARLY


async def test_a_30_mb_body_without_a_declared_size_stops_just_past_the_cap(
    server: tuple[TestServer, Sent], session: aiohttp.ClientSession
) -> None:
    running, sent = server
    started = time.monotonic()
    with pytest.raises(BadInput) as raised:
        await download_capped(session, str(running.make_url("/chunked.png")), "control", CAP)
    assert str(raised.value) == (
        "The `control` attachment is over the 1 MB limit; please attach a smaller file."
    )
    assert time.monotonic() - started < 10
    await asyncio.sleep(0.2)
    assert sent.by_route["/chunked.png"] < EARLY


async def test_a_content_length_smaller_than_the_body_never_yields_more_than_it_declared(
    session: aiohttp.ClientSession,
) -> None:
    lying = LyingServer(declared=1000, body=HUGE)
    async with lying as url:
        try:
            # The HTTP parser reads the declared 1000 bytes, and may then choke on the rest.
            assert len(await download_capped(session, url, "image", CAP)) == 1000
        except BadInput as refused:
            assert str(refused) == UNAVAILABLE.format(role="image")
        await asyncio.sleep(0.2)
    assert lying.sent < EARLY


async def test_a_content_length_larger_than_the_body_is_a_failed_download(
    session: aiohttp.ClientSession,
) -> None:
    async with LyingServer(declared=CAP // 2, body=1000) as url:
        with pytest.raises(BadInput) as raised:
            await download_capped(session, url, "image", CAP)
    assert str(raised.value) == UNAVAILABLE.format(role="image")


async def test_a_gzip_bomb_is_not_inflated(
    server: tuple[TestServer, Sent], session: aiohttp.ClientSession
) -> None:
    running, _ = server
    data = await download_capped(session, str(running.make_url("/gzip.png")), "image", CAP)
    assert data.startswith(b"\x1f\x8b") and len(data) < CAP  # the compressed bytes, as sent


@pytest.mark.parametrize("path", ["/missing.png", None])
async def test_a_missing_or_unreachable_file_asks_to_attach_it_again(
    path: str | None, server: tuple[TestServer, Sent], session: aiohttp.ClientSession
) -> None:
    running, _ = server
    url = str(running.make_url(path)) if path else "http://127.0.0.1:9/gone.png"
    with pytest.raises(BadInput) as raised:
        await download_capped(session, url, "mask", CAP)
    assert str(raised.value) == UNAVAILABLE.format(role="mask")


async def test_download_attachments_fetches_each_role(server: tuple[TestServer, Sent]) -> None:
    running, _ = server
    urls = {"image": str(running.make_url("/small.png")), "mask": str(running.make_url("/cap.png"))}
    found = await download_attachments(urls, CAP)
    assert {role: len(data) for role, data in found.items()} == {"image": 1000, "mask": CAP}
