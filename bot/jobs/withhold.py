"""Recording a job whose images the image filter withheld (bot.moderation.images decides).

The job goes from running to `blocked` with the classifier's verdicts, in one
transaction with its ledger entry (charged only with `[moderation]
charge_blocked`) and its audit entry; then the withheld files are deleted,
unless `keep_blocked` keeps them (and their output rows) for review. Files are
removed after the commit: a crash in between leaves a stray file, never a row
pointing at a missing one.
"""

from __future__ import annotations

import logging
from pathlib import Path

from engine.protocol import JobError, JobResult, NsfwPolicy

from ..blobs import Blobs, key_of
from ..moderation.images import (
    ImageModerationConfig,
    Screened,
    flagged_uploads,
    input_reason,
    moderation_record,
    remove_files,
)
from ..store.db import persist
from ..store.jobs import JobStore, NewOutput
from ..store.models import Job

log = logging.getLogger(__name__)


def outputs_of(
    result: JobResult,
    data_dir: Path,
    screened: Screened | None = None,
    policy: NsfwPolicy = NsfwPolicy.BLOCK,
) -> list[NewOutput]:
    """The result's images as output rows (their keys: paths in the data folder, the
    engine's spool)."""
    return [
        NewOutput(
            index=index,
            path=key_of(data_dir, image.path),
            sha256=image.sha256,
            seed=image.seed,
            width=image.width,
            height=image.height,
            recipe=image.recipe,
            flags={} if screened is None else screened.flags(index, policy),
        )
        for index, image in enumerate(result.images)
    ]


async def withhold_outputs(
    store: JobStore,
    blobs: Blobs,
    config: ImageModerationConfig,
    result: JobResult,
    screened: Screened,
) -> Job:
    """Block a job whose output images were flagged where they may not be shown."""
    assert screened.record is not None and screened.reason is not None
    kept = outputs_of(result, blobs.spool) if config.keep_blocked else []
    for output in kept:
        output.flags.update({"nsfw": True, "withheld": True})
    await blobs.publish(output.path for output in kept)  # stored for review
    record = screened.record | {"charged": config.charge_blocked}
    job = await persist(
        lambda: store.block(
            result.job_id,
            screened.reason or "",
            record,
            gpu_seconds=result.gpu_seconds,
            outputs=kept,
            charge=config.charge_blocked,
        )
    )
    if not config.keep_blocked:
        # Never published: the engine's files in the spool are all there is.
        removed = remove_files(blobs.spool, (key_of(blobs.spool, i.path) for i in result.images))
        log.info("job %s: %d withheld image file(s) deleted", job.id, removed)
    log.info("job %s: %s", job.id, screened.reason)
    return job


async def withhold_inputs(
    store: JobStore, blobs: Blobs, config: ImageModerationConfig, error: JobError, job: Job
) -> Job:
    """Block a job whose uploaded input the engine flagged before any GPU work: nothing
    was made, so nothing is charged."""
    reason = input_reason(error.verdicts, config.image_threshold)
    record = moderation_record(NsfwPolicy.BLOCK, config.image_threshold, inputs=error.verdicts)
    record["charged"] = False
    blocked = await persist(lambda: store.block(job.id, reason, record))
    if not config.keep_blocked:
        flagged = flagged_uploads(job.spec.input_paths, error.verdicts)
        # A re-roll or remix shares its source's upload: kept while another job reads it.
        shared = await store.uploads_in_use(flagged, job.id)
        removed = [key for key in flagged if key not in shared]
        await blobs.delete(removed)
        log.info(
            "job %s: %d flagged upload(s) deleted, %d kept for other jobs",
            job.id,
            len(removed),
            len(shared),
        )
    log.info("job %s: %s", job.id, reason)
    return blocked
