"""Plain values the local Discord server stores and hands to tests."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

JSON = dict[str, Any]

DISCORD_EPOCH_MS = 1_420_070_400_000

# Message flags the server itself interprets.
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7


class Snowflakes:
    """Generates increasing snowflakes whose timestamp part is the real clock.

    discord.py derives `created_at` from ids, so they should look like Discord's.
    """

    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def next(self) -> int:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return (ms << 22) | (next(self._counter) & 0x3FFFFF)


@dataclass(frozen=True)
class Upload:
    """A file part (`files[n]`) exactly as the bot uploaded it."""

    index: int
    filename: str
    content_type: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class Attachment:
    """A stored attachment; `url`/`proxy_url` serve `data` from this server."""

    id: int
    filename: str
    content_type: str
    size: int
    url: str
    proxy_url: str
    data: bytes = field(repr=False)
    description: str | None = None
    width: int | None = None
    height: int | None = None

    def to_payload(self) -> JSON:
        payload: JSON = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.proxy_url,
            "content_type": self.content_type,
        }
        if self.description is not None:
            payload["description"] = self.description
        if self.width is not None and self.height is not None:
            payload["width"] = self.width
            payload["height"] = self.height
        return payload


@dataclass(frozen=True)
class Message:
    """One version of a message as the bot left it (every edit makes a new version)."""

    id: int
    channel_id: int
    author_id: int
    content: str
    embeds: tuple[JSON, ...]
    components: tuple[JSON, ...]
    attachments: tuple[Attachment, ...]
    flags: int
    version: int
    created_at: float
    """`time.monotonic()` when this version was stored."""
    interaction_id: int | None = None
    deleted: bool = False
    payload: JSON = field(default_factory=dict, repr=False)
    """The message object as Discord's REST API would return it."""

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & FLAG_EPHEMERAL)

    @property
    def loading(self) -> bool:
        """True for the "Bot is thinking…" placeholder a deferral leaves."""
        return bool(self.flags & FLAG_LOADING)

    def iter_components(self) -> Iterator[JSON]:
        """Every component, depth first, through rows, sections and containers."""
        stack = list(reversed(self.components))
        while stack:
            component = stack.pop()
            yield component
            children: list[JSON] = list(component.get("components", []))
            for key in ("accessory", "component"):
                if isinstance(component.get(key), dict):
                    children.append(component[key])
            stack.extend(reversed(children))

    def find_component(self, custom_id: str) -> JSON | None:
        return next((c for c in self.iter_components() if c.get("custom_id") == custom_id), None)

    @property
    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for c in self.iter_components() if "custom_id" in c]


@dataclass(frozen=True)
class CallbackRecord:
    """The bot's initial response to an interaction (POST …/callback)."""

    type: int
    """4 reply, 5 deferred reply, 6 deferred update, 7 update message, 8 autocomplete, 9 modal."""
    data: JSON | None
    received_at: float
    """`time.monotonic()`; compare with `InteractionHandle.sent_at`."""
    uploads: tuple[Upload, ...] = ()


@dataclass
class RequestRecord:
    """One HTTP request the server received (API paths are relative to `api_base`)."""

    method: str
    path: str
    query: Mapping[str, str]
    body: Any
    uploads: tuple[Upload, ...]
    received_at: float
    status: int | None = None
    route: str | None = None
    """The route template that handled it, e.g. "PATCH /webhooks/{app}/{token}/messages/{id}"."""


@dataclass
class Fault:
    """A canned error response for the next `remaining` requests matching method + path."""

    method: str
    path_pattern: re.Pattern[str]
    status: int
    body: JSON | None
    headers: Mapping[str, str]
    remaining: int
    triggered: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (
            self.remaining > 0
            and method.upper() == self.method.upper()
            and self.path_pattern.search(path) is not None
        )


class ChangeSignal:
    """Wakes waiters whenever server state changes; waiters re-check their condition.

    Everything runs on one event loop, so nothing can change between a check and the
    `wait()` that follows it: no lost wake-ups without a lock.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait_until(
        self,
        check: Callable[[], T | None],
        timeout: float,  # noqa: ASYNC109 -- the error names what was awaited
        what: str,
        diagnostics: Callable[[], str] = lambda: "",
    ) -> T:
        """Return the first non-None `check()` result; TimeoutError names `what` otherwise."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    event = self._event
                    result = check()
                    if result is not None:
                        return result
                    await event.wait()
        except TimeoutError:
            extra = diagnostics()
            raise TimeoutError(
                f"timed out after {timeout:g}s waiting for {what}" + (f"; {extra}" if extra else "")
            ) from None
