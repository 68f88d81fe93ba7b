"""Retention: stored images and uploads older than `[storage] retention_days` are deleted,
and uploads no job points at (commands refused after their attachments were saved) go
within a day whatever the setting. An old upload stays while a job that reads it is
unfinished or keeps its images (a re-roll of an old result made last week, a job that
waited in the queue): it goes with the last of them.

`sweep` is one pass, a plain async function; `RetentionSweeper` runs it at
start and then every hour, owned (started and stopped) by bot.app. Jobs,
their prompts and the ledger stay: only files (and the rows of the images)
go, each pass audited with what it removed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import PurePosixPath

from sqlalchemy import ColumnElement, delete, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..blobs import INPUTS, Blobs, job_folder
from ..periodic import Periodic
from . import audit
from .models import Job, Output, utcnow
from .uploads import HOLDING_UPLOADS, NOT_FORGOTTEN, upload_paths

log = logging.getLogger(__name__)

SWEEP_EVERY = timedelta(hours=1)
# An upload no job points at is kept this long: its command may still be on its way in.
ORPHAN_GRACE = timedelta(hours=1)
# Job ids named in one audit entry, at most (the counts are always whole).
_AUDITED_IDS = 100


@dataclass(frozen=True)
class Swept:
    jobs: list[str] = field(default_factory=list)  # jobs whose images expired
    images: int = 0  # image files deleted
    inputs: int = 0  # upload folders deleted as expired
    orphans: int = 0  # upload folders no job pointed at


async def sweep(
    sessions: async_sessionmaker[AsyncSession],
    blobs: Blobs,
    retention_days: float | None,
    now: datetime | None = None,
) -> Swept:
    """One pass: expire what is older than `retention_days` (None: keep everything) and
    remove orphaned uploads older than ORPHAN_GRACE; audited when it removed anything."""
    now = now or utcnow()
    jobs: list[str] = []
    images: list[str] = []
    expired_inputs = 0
    if retention_days is not None:
        cutoff = now - timedelta(days=retention_days)
        jobs, images = await _expire_images(sessions, cutoff)
        await blobs.delete(images)
        for job_id in jobs:  # anything else the job left in its folder
            await blobs.delete_under(job_folder(job_id))
        # Not yet finished (finished_at is NULL) or finished since the cutoff.
        kept = await _referenced_uploads(
            sessions, or_(Job.finished_at.is_(None), Job.finished_at >= cutoff)
        )
        expired_inputs = await _delete_uploads_older(blobs, cutoff, kept)
    referenced = await _referenced_uploads(sessions, true())
    orphans = await _delete_uploads_older(blobs, now - ORPHAN_GRACE, referenced)
    swept = Swept(jobs, len(images), expired_inputs, orphans)
    if jobs or expired_inputs:
        log.info(
            "retention: %d image(s) of %d job(s) and %d upload(s) expired",
            len(images),
            len(jobs),
            expired_inputs,
        )
        await _audit(
            sessions,
            "retention.expired",
            {
                "days": retention_days,
                "jobs": len(jobs),
                "images": len(images),
                "inputs": expired_inputs,
                "job_ids": jobs[:_AUDITED_IDS],
            },
        )
    if orphans:
        log.info("retention: %d upload(s) no job used were deleted", orphans)
        await _audit(sessions, "retention.orphans", {"inputs": orphans})
    return swept


async def _expire_images(
    sessions: async_sessionmaker[AsyncSession], cutoff: datetime
) -> tuple[list[str], list[str]]:
    """Delete the image rows of jobs finished before `cutoff`; their job ids and paths.

    The rows go first (in one transaction), the files after: a crash between
    leaves stray files, never rows pointing at missing ones.
    """
    async with sessions.begin() as session:
        rows = (
            await session.execute(
                select(Output.job_id, Output.path)
                .join(Job, Job.id == Output.job_id)
                .where(Job.finished_at < cutoff)
            )
        ).all()
        jobs = sorted({job_id for job_id, _ in rows})
        if jobs:
            await session.execute(delete(Output).where(Output.job_id.in_(jobs)))
    return jobs, [path for _, path in rows]


async def _referenced_uploads(
    sessions: async_sessionmaker[AsyncSession], jobs: ColumnElement[bool]
) -> set[str]:
    """The upload folders (inputs/<name>) the spec of some job among `jobs` (not
    forgotten) points at."""
    async with sessions() as session:
        rows = await session.execute(select(Job.spec).where(jobs, NOT_FORGOTTEN, HOLDING_UPLOADS))
        return {_upload_of(key) for (spec,) in rows for key in upload_paths(spec)}


def _upload_of(key: str) -> str:
    """The upload a key belongs to: its folder `inputs/<name>` (or a stray file's key)."""
    return "/".join(PurePosixPath(key).parts[:2])


async def _delete_uploads_older(blobs: Blobs, cutoff: datetime, keep: set[str]) -> int:
    """Delete the uploads last changed before `cutoff`, except those in `keep`; how many
    went. An upload's age is its newest file's."""
    files: dict[str, list[str]] = defaultdict(list)
    changed: dict[str, datetime] = {}
    for blob in await blobs.listing(INPUTS):
        upload = _upload_of(blob.key)
        files[upload].append(blob.key)
        changed[upload] = max(changed.get(upload, blob.modified), blob.modified)
    old = [
        upload for upload, modified in changed.items() if upload not in keep and modified < cutoff
    ]
    await blobs.delete(key for upload in old for key in files[upload])
    return len(old)


async def _audit(
    sessions: async_sessionmaker[AsyncSession], action: str, params: dict[str, object]
) -> None:
    async with sessions.begin() as session:
        audit.record(session, action, "ok", params=params)


class RetentionSweeper:
    """Runs `sweep` at start and every SWEEP_EVERY; a failed pass is logged and retried."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        blobs: Blobs,
        retention_days: float | None,
        every: timedelta = SWEEP_EVERY,
    ) -> None:
        self._sessions = sessions
        self._blobs = blobs
        self._retention_days = retention_days
        self._timer = Periodic("retention sweep", self._sweep, every.total_seconds(), at_once=True)

    def start(self) -> None:
        self._timer.start()

    async def stop(self) -> None:
        await self._timer.stop()

    async def _sweep(self) -> None:
        await sweep(self._sessions, self._blobs, self._retention_days)
