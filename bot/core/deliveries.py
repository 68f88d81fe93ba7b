"""What a door records about delivering a job's answer, retried through a busy database.

A delivery must not be lost to a database locked for a moment by another process,
so its reads and writes retry for a while (bot.store.db.persist); the door only
sends and renders.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from ..store.db import persist
from ..store.jobs import JobStore
from ..store.models import Job


class Deliveries:
    def __init__(self, store: JobStore) -> None:
        self._store = store

    async def undelivered(self) -> Sequence[Job]:
        """Finished jobs whose answer was never recorded as delivered (at start)."""
        return await self._store.undelivered()

    async def job(self, job_id: str) -> Job:
        """The job as it is now, read through a busy database."""
        return await persist(partial(self._store.get, job_id))

    async def showing(self, job_id: str, message_id: int) -> None:
        """The message that shows the job, to edit as it goes."""
        await self._store.record_message(job_id, message_id)

    async def delivered(self, job_id: str, message_id: int | None, how: str) -> None:
        """Record the answer as delivered (once; a second record is refused by the store)."""
        await persist(partial(self._store.mark_delivered, job_id, message_id, how))
