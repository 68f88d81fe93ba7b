"""What a door records about delivering a job's answer, retried through a busy database.

A delivery must not be lost to a database locked for a moment by another process,
so its reads and writes retry for a while (bot.store.db.persist); the door only
sends and renders. With several front doors on one database, each answer is claimed
before it is sent (`claim`): exactly one front door delivers it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from datetime import timedelta
from functools import partial

from ..store.db import persist
from ..store.events import EventStore
from ..store.jobs import JobStore
from ..store.models import Job

# How long a front door's claim on delivering an answer holds: longer than a delivery
# with all its retries takes, after which a front door that died while delivering
# leaves it to another (a second post is still refused by its nonce).
DELIVERY_CLAIM = timedelta(minutes=2)


def front_door_id() -> str:
    """This process's name in delivery claims: its host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def gone_from_this_host(holder: str) -> bool:
    """Whether `holder` (a front_door_id) was a process of this host that has ended: a
    front door restarted after a crash takes over its old claims at once instead of
    waiting for them to lapse."""
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


class Deliveries:
    def __init__(self, store: JobStore, events: EventStore, front_door: str) -> None:
        self._store = store
        self._events = events
        self.front_door = front_door

    async def undelivered(self) -> Sequence[Job]:
        """Finished jobs whose answer was never recorded as delivered (at start)."""
        return await self._store.undelivered()

    async def job(self, job_id: str) -> Job:
        """The job as it is now, read through a busy database."""
        return await persist(partial(self._store.get, job_id))

    async def claim(self, job: Job) -> bool:
        """Claim delivering `job`'s answer for this front door (audited); False when
        another front door delivers it, or it was delivered."""
        holder = job.delivery_claimed_by
        gone = [holder] if holder and gone_from_this_host(holder) else []
        return await persist(
            partial(self._events.claim_delivery, job.id, self.front_door, DELIVERY_CLAIM, gone)
        )

    async def showing(self, job_id: str, message_id: int) -> None:
        """The message that shows the job, to edit as it goes."""
        await self._store.record_message(job_id, message_id)

    async def delivered(self, job_id: str, message_id: int | None, how: str) -> None:
        """Record the answer as delivered (once; a second record is refused by the store)."""
        await persist(partial(self._store.mark_delivered, job_id, message_id, how))
