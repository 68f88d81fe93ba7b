"""Rate limits: token buckets per member and per server, pure and clock-driven.

A bucket holds up to `burst` tokens and refills at `per_minute`; each job
asked for takes one. So a member may send a few commands in a row, then one
every so often, and a flood is refused at once without touching the database
or the GPU. The buckets live in memory: a restart forgives, which is fine for
limits measured in seconds. Times are `time.monotonic()` values passed in, so
the rules are tested without waiting.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Buckets idle this long are full again and are dropped, so memory stays bounded.
_IDLE_SECONDS = 3600.0


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

    scope: str  # "member" or "server"
    retry_after: float  # seconds

    def message(self) -> str:
        seconds = max(1, round(self.retry_after + 0.49))
        if seconds >= 90:
            wait = f"{round(seconds / 60)} minutes"
        else:
            wait = "1 second" if seconds == 1 else f"{seconds} seconds"
        if self.scope == "member":
            return f"You are sending requests faster than this server allows; try again in {wait}."
        return f"This server is sending the bot many requests right now; try again in {wait}."


class RateLimits:
    """A bucket per member and one per server; a request takes a token from both or neither.

    A burst of 0 lifts that limit.
    """

    def __init__(
        self,
        member_burst: int,
        member_per_minute: float,
        guild_burst: int,
        guild_per_minute: float,
    ) -> None:
        self._member = (member_burst, member_per_minute)
        self._guild = (guild_burst, guild_per_minute)
        self._members: dict[int, TokenBucket] = {}
        self._guilds: dict[int, TokenBucket] = {}
        self._last_sweep = 0.0

    def acquire(self, user_id: int, guild_id: int | None, now: float) -> Limited | None:
        """Take a token for one job `user_id` asks for in `guild_id` (None: a DM), or say
        which limit refuses it. A member's refused requests do not use up the server's."""
        self._sweep(now)
        member = self._bucket(self._members, user_id, self._member)
        guild = self._bucket(self._guilds, guild_id or 0, self._guild)
        if member is not None and (wait := member.wait(now)) > 0:
            return Limited("member", wait)
        if guild is not None and (wait := guild.wait(now)) > 0:
            return Limited("server", wait)
        for bucket in (member, guild):
            if bucket is not None:
                bucket.take(now)
        return None

    @staticmethod
    def _bucket(
        buckets: dict[int, TokenBucket], key: int, limits: tuple[int, float]
    ) -> TokenBucket | None:
        burst, per_minute = limits
        if burst == 0:
            return None
        if key not in buckets:
            buckets[key] = TokenBucket(burst, per_minute)
        return buckets[key]

    def _sweep(self, now: float) -> None:
        if now - self._last_sweep < _IDLE_SECONDS:
            return
        self._last_sweep = now
        for buckets in (self._members, self._guilds):
            for key in [k for k, b in buckets.items() if now - (b.updated or now) > _IDLE_SECONDS]:
                del buckets[key]
