"""Members' uploads: the stored inputs (init images, masks, sketches, reference images) a
job's spec points at, and which of them another job still reads.

A re-roll or remix copies its source job's spec, upload paths included, so one upload
can serve jobs of several members. It is deleted (forget-me, a flagged upload, retention)
only when no job outside those being cleaned up points at it. Jobs already forgotten
count for nobody: their member asked for their images to go, and they never run again.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from sqlalchemy import ColumnElement, Text, cast, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..blobs import INPUTS, uploads_of
from ..jobs.spec import JobSpec
from .models import Job

# A forgotten member's jobs stand under a pseudonym, a negative id (bot.store.users).
NOT_FORGOTTEN = Job.user_id >= 0


def _mentioning(*keys: str) -> ColumnElement[bool]:
    """Jobs whose spec's JSON holds a string that starts with one of `keys`: a prefilter,
    on both databases, over every field of JobSpec.input_paths at once (the reference
    images are a list, which a JSON path cannot compare); upload_paths of the rows read
    decides."""
    text = cast(Job.spec, Text)
    return or_(*(text.contains(f'"{key}', autoescape=True) for key in keys))


# Jobs whose spec may point at some upload (any key under inputs/).
HOLDING_UPLOADS = _mentioning(f"{INPUTS}/")


def upload_paths(spec: JobSpec) -> list[str]:
    """The uploads a job spec points at (never another job's outputs)."""
    return uploads_of(spec.input_paths.values())


async def uploads_in_use(
    session: AsyncSession, paths: Iterable[str], other_than: Collection[str]
) -> set[str]:
    """Those of `paths` that a job not in `other_than` (job ids) and not forgotten points at.

    Read in the caller's transaction: in the one that takes the write lock first
    (forget-me), no job can start using an upload between this read and the commit.
    """
    wanted = sorted(set(paths))
    if not wanted:
        return set()
    rows = await session.execute(
        select(Job.spec).where(
            Job.id.not_in(other_than),
            NOT_FORGOTTEN,
            _mentioning(*wanted),
        )
    )
    return {path for (spec,) in rows for path in upload_paths(spec)} & set(wanted)
