"""The in-memory index of queued jobs; the database stays the truth.

Two lanes, each first come, first served: a worker takes a normal-lane job
whenever one waits, and a relax-lane (over quota) job only when none does.
Rebuilt from the database at start.
"""

from __future__ import annotations

import asyncio

from ..store.models import Lane


class JobQueue:
    def __init__(self) -> None:
        self._lanes: dict[Lane, list[str]] = {Lane.NORMAL: [], Lane.RELAX: []}
        self._changed = asyncio.Condition()

    def __len__(self) -> int:
        return sum(len(waiting) for waiting in self._lanes.values())

    def _in_order(self) -> list[str]:
        return self._lanes[Lane.NORMAL] + self._lanes[Lane.RELAX]

    def position(self, job_id: str) -> int | None:
        """1 for the next job to run; None when the job is not waiting.

        A relax job's position grows when normal jobs arrive ahead of it.
        """
        try:
            return self._in_order().index(job_id) + 1
        except ValueError:
            return None

    async def put(self, job_id: str, lane: Lane = Lane.NORMAL) -> int:
        async with self._changed:
            self._lanes[lane].append(job_id)
            self._changed.notify()
            ahead = len(self._lanes[Lane.NORMAL]) if lane is Lane.RELAX else 0
            return ahead + len(self._lanes[lane])

    async def take(self) -> str:
        """Wait for the next job (normal lane first) and remove it from the queue."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self) > 0)
            lane = Lane.NORMAL if self._lanes[Lane.NORMAL] else Lane.RELAX
            return self._lanes[lane].pop(0)

    def remove(self, job_id: str) -> bool:
        for waiting in self._lanes.values():
            if job_id in waiting:
                waiting.remove(job_id)
                return True
        return False
