"""Rate limits: token buckets per member, per server and per API key, pure and clock-driven.

A bucket holds up to `burst` tokens and refills at `per_minute`; each request
takes one. So a member may send a few commands in a row, then one every so
often, and a flood is refused at once without touching the database or the GPU.
Both doors use these buckets: Discord takes a member's and their server's for
each job asked for, the HTTP API an API key's for each request (its burst is a
minute's worth). A refusal is a `Limited` that each door words its own way. The
buckets live in memory: a restart forgives, which is fine for limits measured in
seconds. Times are `time.monotonic()` values passed in, so the rules are tested
without waiting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# Buckets idle this long are full again and are dropped, so memory stays bounded.
_IDLE_SECONDS = 3600.0

# Whose limit refused a request: a Discord member's, their server's, or an API key's.
Scope = Literal["member", "server", "key"]


@dataclass
class TokenBucket:
    burst: int
    per_minute: float
    tokens: float = field(init=False)
    updated: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)

    def _refill(self, now: float) -> None:
        if self.updated is not None:
            elapsed = max(0.0, now - self.updated)
            self.tokens = min(float(self.burst), self.tokens + elapsed * self.per_minute / 60)
        self.updated = now

    def wait(self, now: float) -> float:
        """Seconds until one token is there (0: now), taking nothing."""
        self._refill(now)
        missing = 1.0 - self.tokens
        return 0.0 if missing <= 1e-9 else missing * 60 / self.per_minute

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1.0


@dataclass(frozen=True)
class Limited:
    """A refused request: whose limit it hit and when to try again."""

    scope: Scope
    retry_after: float  # seconds

    def message(self) -> str:
        """The sentence a member is told (the core's RATE_LIMITED refusal; over HTTP a 429
        with `retry_after` as its Retry-After)."""
        seconds = max(1, round(self.retry_after + 0.49))
        if seconds >= 90:
            wait = f"{round(seconds / 60)} minutes"
        else:
            wait = "1 second" if seconds == 1 else f"{seconds} seconds"
        if self.scope == "server":
            return f"This server is sending the bot many requests right now; try again in {wait}."
        return f"You are sending requests faster than this server allows; try again in {wait}."


class Buckets:
    """One limit for many keys (members, servers or API keys): a bucket per key, full at
    its first request. A burst of 0 lifts the limit."""

    def __init__(self, scope: Scope, burst: int, per_minute: float) -> None:
        self._scope = scope
        self._burst = burst
        self._per_minute = per_minute
        self._buckets: dict[int, TokenBucket] = {}
        self._last_sweep = 0.0

    def refusal(self, key: int, now: float) -> Limited | None:
        """Whether `key` has a token now, taking nothing (None: it has)."""
        self._sweep(now)
        if self._burst == 0:
            return None
        wait = self._bucket(key).wait(now)
        return Limited(self._scope, wait) if wait > 0 else None

    def take(self, key: int, now: float) -> None:
        if self._burst > 0:
            self._bucket(key).take(now)

    def acquire(self, key: int, now: float) -> Limited | None:
        """Take a token for one request of `key`, or say when to retry. A refused request
        takes none, so a client that keeps retrying is let in as soon as its wait is over."""
        refused = self.refusal(key, now)
        if refused is None:
            self.take(key, now)
        return refused

    def _bucket(self, key: int) -> TokenBucket:
        if key not in self._buckets:
            self._buckets[key] = TokenBucket(self._burst, self._per_minute)
        return self._buckets[key]

    def _sweep(self, now: float) -> None:
        if now - self._last_sweep < _IDLE_SECONDS:
            return
        self._last_sweep = now
        idle = [k for k, b in self._buckets.items() if now - (b.updated or now) > _IDLE_SECONDS]
        for key in idle:
            del self._buckets[key]


class RateLimits:
    """Discord's limits: a bucket per member and one per server; a job asked for takes a
    token from both or neither."""

    def __init__(
        self,
        member_burst: int,
        member_per_minute: float,
        guild_burst: int,
        guild_per_minute: float,
    ) -> None:
        self._members = Buckets("member", member_burst, member_per_minute)
        self._guilds = Buckets("server", guild_burst, guild_per_minute)

    def acquire(self, user_id: int, guild_id: int | None, now: float) -> Limited | None:
        """Take a token for one job `user_id` asks for in `guild_id` (None: a DM), or say
        which limit refuses it. A member's refused requests do not use up the server's."""
        guild = guild_id or 0
        refused = self._members.refusal(user_id, now) or self._guilds.refusal(guild, now)
        if refused is None:
            self._members.take(user_id, now)
            self._guilds.take(guild, now)
        return refused
