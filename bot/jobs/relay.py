"""Job events across processes (PostgreSQL): a front door hears of jobs that run in another
process as it hears of its own, through the same JobEvents interface.

What a process's pool tells (started, progress, finished) goes to its own listeners at
once, as in one process, and out to the others: progress is written on the job's row at
most once per interval; a start and an end are announced by a NOTIFY of the job id
(bot.store.events). A preview travels as a file in the blob store: at each write the
latest one is stored at its job's key (`preview_key`, overwritten each time) and the row
names that key; the job's end deletes it. Listeners in the process running the job hear
the engine's own file (a path on this host), the others the key, read through the store
when shown (bot.discord.delivery).

Every interval each process reads the running jobs' rows and tells its listeners what
they have not heard yet: a job started elsewhere, a step further, a job no longer
running that ended. The notifications only make starts and ends prompt; that read is
the guarantee, and a LISTEN connection that drops is opened again, after which the
catch-up hooks (a front door's search for undelivered answers) run.

Each listener hears each job's start and end once, and its steps in order, whichever
way they arrive first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from engine.protocol import Progress

from ..blobs import Blobs, job_folder
from ..store.events import Announcement, EventKind, EventStore, RunningRow
from ..store.models import Job, JobState
from .events import JobEvents

log = logging.getLogger(__name__)

# Besides each reconnection, the catch-up hooks run this often: a delivery claimed by a
# front door that died is taken over once its claim lapsed.
CATCH_UP_SECONDS = 60.0
# Ended jobs remembered, so an end heard twice (told here, then notified) is told once.
REMEMBERED_ENDS = 1000


def preview_key(job_id: str) -> str:
    """Where a running job's latest preview is stored for other processes: in the job's
    folder, so that forget-me and retention, which delete the folder, take a preview a
    dead worker left too."""
    return f"{job_folder(job_id)}/preview.png"


class SharedEvents(JobEvents):
    """JobEvents shared by every process on one PostgreSQL database; `start` and `stop`
    are its owner's (bot.jobs.service.JobService)."""

    def __init__(self, store: EventStore, blobs: Blobs, interval: float) -> None:
        super().__init__()
        self._store = store
        self._blobs = blobs
        self._interval = interval
        # Running jobs whose start the listeners heard, and the last step they heard.
        self._steps: dict[str, int] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()
        # This process's progress not yet written on the rows.
        self._unwritten: dict[str, Progress] = {}
        # This process's jobs that had previews: their end deletes the stored one, also
        # one an earlier, killed run of the job left there.
        self._previewed: set[str] = set()
        self._catch_up: list[Callable[[], Awaitable[None]]] = []
        self._connections = 0
        self._loops: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def catch_up_with(self, hook: Callable[[], Awaitable[None]]) -> None:
        self._catch_up.append(hook)

    def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._store.listen(self._heard, self._connected), name="events"),
            asyncio.create_task(self._follow(), name="events-follow"),
            asyncio.create_task(self._catch_up_now_and_then(), name="events-catch-up"),
        ]

    async def stop(self) -> None:
        """Write the last progress, stop following, and let announcements under way go."""
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._write_progress()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- what this process's pool and intake tell --------------------------------------------

    def started(self, job: Job) -> None:
        if self._tell_started(job):
            self._spawn(self._store.announce(Announcement(EventKind.STARTED, job.id)))

    def progress(self, progress: Progress) -> None:
        self._unwritten[progress.job_id] = progress
        self._steps[progress.job_id] = max(progress.step, self._steps.get(progress.job_id, -1))
        if progress.preview is not None:
            self._previewed.add(progress.job_id)
        super().progress(progress)

    def finished(self, job: Job) -> None:
        if self._tell_finished(job):
            self._spawn(self._store.announce(Announcement(EventKind.FINISHED, job.id)))
        # Whether or not the rows told its end first, its stored preview goes.
        if job.id in self._previewed:
            self._previewed.discard(job.id)
            self._spawn(self._blobs.delete([preview_key(job.id)]))

    # -- telling this process's listeners, each event once -----------------------------------

    def _tell_started(self, job: Job) -> bool:
        if job.id in self._steps or job.id in self._ended:
            return False
        self._steps[job.id] = -1
        super().started(job)
        return True

    def _tell_finished(self, job: Job) -> bool:
        if job.id in self._ended:
            return False
        self._ended[job.id] = None
        if len(self._ended) > REMEMBERED_ENDS:
            self._ended.popitem(last=False)
        self._steps.pop(job.id, None)
        self._unwritten.pop(job.id, None)
        super().finished(job)
        return True

    def _tell_progress(self, row: RunningRow) -> None:
        """A step read from the row, told when it is further than the last one heard."""
        if row.step is None or row.total is None or row.step <= self._steps[row.job_id]:
            return
        self._steps[row.job_id] = row.step
        super().progress(
            Progress(job_id=row.job_id, step=row.step, total=row.total, preview=row.preview)
        )

    # -- notifications ------------------------------------------------------------------------

    def _heard(self, announcement: Announcement) -> None:
        if announcement.kind is EventKind.FINISHED and announcement.job_id in self._ended:
            return  # told here already (this process's own end, echoed)
        self._spawn(self._announced(announcement))

    async def _announced(self, announcement: Announcement) -> None:
        job = await self._store.job(announcement.job_id)
        if job is None:
            return
        if job.state is JobState.RUNNING:
            self._tell_started(job)
        elif job.state.finished:
            self._tell_finished(job)

    async def _connected(self) -> None:
        """After a reconnection, what the notifications missed is looked for at once."""
        self._connections += 1
        if self._connections > 1:
            await self._run_catch_up()

    # -- the rows, every interval -------------------------------------------------------------

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._write_progress()
                if self._listeners:  # a process without front doors (a worker) only writes
                    await self._read_rows()
            except Exception:
                log.exception("following the jobs' rows failed; trying again")

    async def _write_progress(self) -> None:
        unwritten, self._unwritten = self._unwritten, {}
        for progress in unwritten.values():
            preview = await self._publish_preview(progress)
            await self._store.record_progress(
                progress.job_id, progress.step, progress.total, preview
            )

    async def _publish_preview(self, progress: Progress) -> str | None:
        """Store the engine's latest preview at its job's key; the key, or None without a
        preview (none this step, or the engine removed it: its job just ended)."""
        if progress.preview is None:
            return None
        try:
            data = await asyncio.to_thread(Path(progress.preview).read_bytes)
        except OSError:
            return None
        key = preview_key(progress.job_id)
        await self._blobs.put(key, data)
        if progress.job_id in self._ended:  # it ended while stored: its end deleted too early
            await self._blobs.delete([key])
            return None
        return key

    async def _read_rows(self) -> None:
        rows = await self._store.running()
        running = {row.job_id for row in rows}
        for row in rows:
            if row.job_id not in self._steps:
                job = await self._store.job(row.job_id)
                if job is None or job.state is not JobState.RUNNING or not self._tell_started(job):
                    continue
            self._tell_progress(row)
        for job_id in [job_id for job_id in self._steps if job_id not in running]:
            job = await self._store.job(job_id)
            if job is not None and job.state.finished:
                self._tell_finished(job)
            else:  # back in the queue (or gone): its next start is told again
                self._steps.pop(job_id, None)

    # -- catching up --------------------------------------------------------------------------

    async def _catch_up_now_and_then(self) -> None:
        while True:
            await asyncio.sleep(CATCH_UP_SECONDS)
            await self._run_catch_up()

    async def _run_catch_up(self) -> None:
        for hook in self._catch_up:
            try:
                await hook()
            except Exception:
                log.exception("catching up on job events failed; trying again later")

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name="job-event")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("a job event was not passed on: %s", task.exception())
