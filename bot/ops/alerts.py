"""Alerts: a message in `[alerts] channel_id` when the service degrades, one more when it
recovers, each audited.

Four conditions are checked every `check_seconds` by one background task
(owned by bot.app: started after connecting, cancelled and awaited at stop):
the success rate over the last jobs, the mean time from queued to delivered,
engine restarts in the last hour, and free disk. A condition that starts
firing posts once; while it keeps firing nothing more is posted; when it
clears, the recovery is posted. A condition that flaps posts again only after
`repeat_minutes` (the recovery of an unposted alert is not posted either).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from ..config import AlertsConfig
from ..jobs.engine_client import EngineProcess
from ..store.models import JobState
from .facts import OpsQueries
from .health import GB

log = logging.getLogger(__name__)

HOUR = 3600.0

Post = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class Reading:
    """One condition as checked now: whether it fires, and the words for either case."""

    name: str
    firing: bool
    alert: str
    recovery: str


def restarts(engine: EngineProcess) -> int:
    """Starts after the engine's first: each one followed a crash, a hang or a kill."""
    return max(0, engine.starts - 1)


class Alerts:
    def __init__(
        self,
        config: AlertsConfig,
        queries: OpsQueries,
        engines: Sequence[EngineProcess],
        free_bytes: Callable[[], int],
        min_free_gb: float,
        post: Post,
    ) -> None:
        self._config = config
        self._queries = queries
        self._engines = list(engines)
        self._free_bytes = free_bytes
        self._min_free_gb = min_free_gb
        self._post = post
        self._firing: dict[str, bool] = {}
        self._posted: dict[str, bool] = {}  # whether this episode's alert was posted
        self._last_post: dict[str, float] = {}
        self._restarts: deque[float] = deque()
        self._restarts_seen = {id(engine): restarts(engine) for engine in self._engines}
        self._task: asyncio.Task[None] | None = None

    # -- the owned task -------------------------------------------------------------------

    def start(self) -> None:
        if self._config.channel_id is None or self._task is not None:
            return
        self._task = asyncio.create_task(self._loop(), name="alerts")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.check_seconds)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "alert check failed; trying again in %g s", self._config.check_seconds
                )

    # -- one round --------------------------------------------------------------------------

    async def check(self) -> list[str]:
        """Read every condition, post what changed; the messages posted."""
        posted = []
        for reading in await self.readings():
            was = self._firing.get(reading.name, False)
            self._firing[reading.name] = reading.firing
            if reading.firing and not was:
                now = time.monotonic()
                last = self._last_post.get(reading.name)
                if last is not None and now - last < self._config.repeat_minutes * 60:
                    log.warning(
                        "alert %s fires again (not posted: rate limit): %s",
                        reading.name,
                        reading.alert,
                    )
                    continue
                self._last_post[reading.name] = now
                self._posted[reading.name] = True
                posted.append(await self._send("alert.fired", reading.name, reading.alert))
            elif was and not reading.firing and self._posted.pop(reading.name, False):
                posted.append(await self._send("alert.recovered", reading.name, reading.recovery))
        return posted

    async def _send(self, action: str, name: str, message: str) -> str:
        log.warning("%s %s: %s", action, name, message)
        outcome = "posted"
        try:
            await self._post(message)
        except Exception as error:
            log.error("could not post the alert to channel %s: %s", self._config.channel_id, error)
            outcome = f"not posted: {error}"[:32]
        await self._queries.record_alert(action, name, message, outcome)
        return message

    async def readings(self) -> list[Reading]:
        return [
            await self._success_rate(),
            await self._slow_delivery(),
            self._engine_restarts(),
            self._low_disk(),
        ]

    async def _success_rate(self) -> Reading:
        config = self._config
        outcomes = await self._queries.recent_outcomes(config.success_window)
        succeeded = sum(1 for state in outcomes if state is JobState.SUCCEEDED)
        rate = succeeded / len(outcomes) if outcomes else 1.0
        failures = await self._queries.last_failures(3) if rate < config.min_success_rate else []
        examples = "; ".join(f"`{f.job_id}`: {f.error[:80]}" for f in failures)
        return Reading(
            "success_rate",
            rate < config.min_success_rate,
            f"⚠️ Only {rate:.0%} of the last {len(outcomes)} jobs succeeded (alert under"
            f" {config.min_success_rate:.0%}). Latest failures: {examples}",
            f"✅ Jobs succeed again: {rate:.0%} of the last {len(outcomes)}.",
        )

    async def _slow_delivery(self) -> Reading:
        config = self._config
        window = config.mean_window_minutes
        mean = await self._queries.mean_delivery_seconds(timedelta(minutes=window))
        slow = mean is not None and mean > config.max_mean_seconds
        return Reading(
            "slow_delivery",
            slow,
            f"⚠️ Jobs take {mean or 0:.0f} s on average from queued to delivered over the last"
            f" {window:g} minutes (alert over {config.max_mean_seconds:g} s).",
            f"✅ Delivery is fast again: {mean or 0:.0f} s on average over {window:g} minutes.",
        )

    def _engine_restarts(self) -> Reading:
        now = time.monotonic()
        for engine in self._engines:
            new = restarts(engine) - self._restarts_seen[id(engine)]
            self._restarts.extend([now] * new)
            self._restarts_seen[id(engine)] = restarts(engine)
        while self._restarts and self._restarts[0] < now - HOUR:
            self._restarts.popleft()
        limit = self._config.max_engine_restarts_per_hour
        count = len(self._restarts)
        return Reading(
            "engine_restarts",
            count > limit,
            f"⚠️ The engines restarted {count} times in the last hour (alert over {limit});"
            " the bot's log says why (crashes, hangs, out of memory).",
            "✅ The engines have stopped restarting.",
        )

    def _low_disk(self) -> Reading:
        free = self._free_bytes() / GB
        minimum = self._min_free_gb
        return Reading(
            "low_disk",
            free < minimum,
            f"⚠️ Only {free:.1f} GB free in the data folder (alert under {minimum:g} GB);"
            " images cannot be saved when it is full.",
            f"✅ Disk space is back: {free:.1f} GB free.",
        )
