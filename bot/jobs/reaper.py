"""The reaper: running jobs whose worker stopped renewing its lease (killed, frozen, cut
off from the database) go back to the queue, their attempt counted, or fail at the
limit (bot.store.jobs `reap_expired`).

Any process may run one, as many as there are: each move is a compare-and-set on the
lease being out, so running it twice, or in two processes at once, changes nothing more.
The worker pool owns one in every process (workers and front doors alike), so a queue
served by several hosts gets its jobs back while any one of them is up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..periodic import Periodic
from ..store.jobs import JobStore
from ..store.models import Job

log = logging.getLogger(__name__)


class Reaper:
    """Reaps every `every` seconds until stopped; `ended` hears each job it failed or
    cancelled (to be delivered), `requeued` is called when it put any back."""

    def __init__(
        self,
        store: JobStore,
        every: float,
        ended: Callable[[Job], None],
        requeued: Callable[[], None],
    ) -> None:
        self.store = store
        self._ended = ended
        self._requeued = requeued
        self._timer = Periodic("lease reaper", self.reap, every)

    async def reap(self) -> list[Job]:
        """Reap once; what each expired job became."""
        reaped = await self.store.reap_expired()
        for job in reaped:
            log.warning("job %s: its lease ran out: %s (%s)", job.id, job.state, job.error)
            if job.state.finished:
                self._ended(job)
        if any(not job.state.finished for job in reaped):
            self._requeued()
        return reaped

    def start(self) -> None:
        self._timer.start()

    async def stop(self) -> None:
        await self._timer.stop()
