"""Retention: old images and uploads expire; uploads no job uses go within a day."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from bot.jobs.spec import JobSpec
from bot.store.jobs import Requester
from bot.store.models import Job, JobState, Output, utcnow
from bot.store.retention import RetentionSweeper, sweep
from tests.stores import Stores, spec

DANA = Requester(user_id=444, user_name="dana", guild_id=10, channel_id=20)
DAY = 86400.0


def write(path: Path, age_days: float = 0.0) -> Path:
    """A file (and its folder) last changed `age_days` ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"png")
    then = utcnow().timestamp() - age_days * DAY
    os.utime(path, (then, then))
    os.utime(path.parent, (then, then))
    return path


async def finished_days_ago(stores: Stores, job_id: str, days: float, **changes: object) -> None:
    """A succeeded job with one image, finished `days` ago."""
    data_dir = stores.config.storage.data_dir
    await stores.run_job(job_id, DANA, 1.0)
    write(data_dir / "images" / job_id / "0.png", days)
    async with stores.sessions.begin() as session:
        await session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(finished_at=utcnow() - timedelta(days=days), **changes)
        )


async def test_images_and_uploads_older_than_the_retention_are_deleted_and_audited(
    stores: Stores,
) -> None:
    data_dir = stores.config.storage.data_dir
    old_upload = write(data_dir / "inputs" / "old" / "image.png", age_days=40)
    new_upload = write(data_dir / "inputs" / "new" / "image.png", age_days=2)
    await finished_days_ago(stores, "old", 40, spec=spec(init_image="inputs/old/image.png"))
    await finished_days_ago(stores, "new", 2, spec=spec(init_image="inputs/new/image.png"))

    swept = await sweep(stores.sessions, stores.blobs, retention_days=30)

    assert (swept.jobs, swept.images, swept.inputs, swept.orphans) == (["old"], 1, 1, 0)
    assert not (data_dir / "images" / "old").exists() and not old_upload.exists()
    assert (data_dir / "images" / "new" / "0.png").exists() and new_upload.exists()
    assert await stores.count(Output, Output.job_id == "old") == 0
    assert await stores.count(Output, Output.job_id == "new") == 1
    assert (await stores.jobs.get("old")).state is JobState.SUCCEEDED  # the job itself stays
    (entry,) = (await stores.audit.query(action="retention.expired")).entries
    assert entry.params | {"job_ids": None} == {
        "days": 30,
        "jobs": 1,
        "images": 1,
        "inputs": 1,
        "job_ids": None,
    }
    assert entry.params["job_ids"] == ["old"]

    again = await sweep(stores.sessions, stores.blobs, retention_days=30)
    assert (again.jobs, again.images, again.inputs) == ([], 0, 0)
    assert (await stores.audit.query(action="retention")).total == 1  # quiet when idle


async def test_without_a_retention_nothing_expires_but_orphaned_uploads_still_go(
    stores: Stores,
) -> None:
    data_dir = stores.config.storage.data_dir
    await finished_days_ago(stores, "ancient", 4000)
    used = write(data_dir / "inputs" / "used" / "image.png", age_days=3)
    await stores.quotas.admit(
        "queued",
        DANA,
        spec(mask_image="inputs/used/m.png", init_image="inputs/used/image.png"),
        "tiny",
        [1],
    )
    refused = write(data_dir / "inputs" / "refused" / "image.png", age_days=0.5)
    arriving = write(data_dir / "inputs" / "arriving" / "image.png", age_days=0.001)

    swept = await sweep(stores.sessions, stores.blobs, retention_days=None)

    assert (swept.jobs, swept.images, swept.inputs, swept.orphans) == ([], 0, 0, 1)
    assert (data_dir / "images" / "ancient" / "0.png").exists()
    assert used.exists() and arriving.exists() and not refused.exists()
    (entry,) = (await stores.audit.query(action="retention.orphans")).entries
    assert entry.params == {"inputs": 1}


async def test_the_sweeper_runs_a_pass_at_start_and_stops_when_told(stores: Stores) -> None:
    data_dir = stores.config.storage.data_dir
    refused = write(data_dir / "inputs" / "refused" / "image.png", age_days=1)
    sweeper = RetentionSweeper(stores.sessions, stores.blobs, retention_days=None)
    sweeper.start()
    for _ in range(100):
        if not refused.exists():
            break
        await asyncio.sleep(0.05)
    await sweeper.stop()
    assert not refused.exists()


async def test_an_old_upload_stays_while_a_queued_or_kept_job_reads_it(stores: Stores) -> None:
    data_dir = stores.config.storage.data_dir
    names = ("waiting", "rerolled", "expired")
    uploads = {name: write(data_dir / "inputs" / name / "image.png", 40) for name in names}

    def reading(name: str) -> JobSpec:
        return spec(init_image=f"inputs/{name}/image.png")

    # A job still in the queue, and a re-roll made last week of a 40-day-old result.
    await stores.quotas.admit("queued", DANA, reading("waiting"), "tiny", [1])
    await finished_days_ago(stores, "old", 40, spec=reading("rerolled"))
    await finished_days_ago(stores, "reroll", 7, spec=reading("rerolled"))
    await finished_days_ago(stores, "gone", 40, spec=reading("expired"))

    swept = await sweep(stores.sessions, stores.blobs, retention_days=30)

    assert (sorted(swept.jobs), swept.inputs) == (["gone", "old"], 1)
    assert uploads["waiting"].exists() and uploads["rerolled"].exists()
    assert not uploads["expired"].exists()


async def test_an_upload_a_queued_job_reads_as_a_reference_image_stays(stores: Stores) -> None:
    """A blend's images (or a --sref's copy of a result) are uploads as an init image is:
    neither expired nor orphaned while a job that waits in the queue reads them."""
    data_dir = stores.config.storage.data_dir
    reference = write(data_dir / "inputs" / "blend" / "image1.png", 40)
    blend = spec(references=("inputs/blend/image1.png",), reference_mode="blend")
    await stores.quotas.admit("queued", DANA, blend, "tiny", [1])

    for days in (30, None):  # expiry, then the orphans' pass alone
        swept = await sweep(stores.sessions, stores.blobs, retention_days=days)
        assert (swept.inputs, swept.orphans) == (0, 0), days
    assert reference.exists()
