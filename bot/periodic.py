"""A step repeated on a timer by one task that its owner starts and stops: the
retention sweep, the lease reaper, the database heartbeat."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Periodic:
    """Runs `step` every `every` seconds (the first time at once with `at_once`, else
    after one interval) until `stop`, which cancels the task and awaits it. A step that
    fails is logged and tried again at the next round (a database restarting)."""

    def __init__(
        self,
        name: str,
        step: Callable[[], Awaitable[object]],
        every: float,
        *,
        at_once: bool = False,
    ) -> None:
        self._name = name
        self._step = step
        self._every = every
        self._at_once = at_once
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        if not self._at_once:
            await asyncio.sleep(self._every)
        while True:
            try:
                await self._step()
            except Exception:
                log.exception("%s failed; trying again in %g s", self._name, self._every)
            await asyncio.sleep(self._every)
