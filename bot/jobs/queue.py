"""The in-memory index of queued jobs; the database stays the truth.

First come, first served. Rebuilt from the database at start.
"""

from __future__ import annotations

import asyncio


class JobQueue:
    def __init__(self) -> None:
        self._waiting: list[str] = []
        self._changed = asyncio.Condition()

    def __len__(self) -> int:
        return len(self._waiting)

    def position(self, job_id: str) -> int | None:
        """1 for the next job to run; None when the job is not waiting."""
        try:
            return self._waiting.index(job_id) + 1
        except ValueError:
            return None

    async def put(self, job_id: str) -> int:
        async with self._changed:
            self._waiting.append(job_id)
            self._changed.notify()
            return len(self._waiting)

    async def take(self) -> str:
        """Wait for the next job and remove it from the queue."""
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._waiting))
            return self._waiting.pop(0)

    def remove(self, job_id: str) -> bool:
        try:
            self._waiting.remove(job_id)
        except ValueError:
            return False
        return True
