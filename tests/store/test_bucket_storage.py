"""With `[storage] backend = "s3"`, forget-me and retention delete in the bucket: a
forgotten member's images and uploads go, another member's stay; expired images and
uploads go, fresh ones and those a job still reads stay."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from bot.store.audit import Actor
from bot.store.jobs import Requester
from bot.store.models import JobState, utcnow
from bot.store.retention import sweep
from tests.buckets import Bucket
from tests.databases import Database
from tests.stores import Stores, open_stores, spec

DANA = Requester(user_id=444, user_name="dana", guild_id=10, channel_id=20)
ERIN = Requester(user_id=555, user_name="erin", guild_id=10, channel_id=20)


@pytest.fixture
async def stores(tmp_path: Path, database: Database, bucket: Bucket) -> AsyncIterator[Stores]:
    async with open_stores(tmp_path, bucket.toml(), database=database) as opened:
        yield opened


async def test_forget_me_deletes_the_members_images_and_uploads_from_the_bucket(
    stores: Stores, bucket: Bucket
) -> None:
    for name in ("dana", "erin"):
        await stores.blobs.put(f"inputs/{name}/image.png", b"upload")
    await stores.run_job("dana1", DANA, 1.0, count=2)
    await stores.run_job("erin1", ERIN, 1.0)
    for key in ("images/dana1/0.png", "images/dana1/1.png", "images/erin1/0.png"):
        await stores.blobs.put(key, b"png")
    # Dana's upload, read by a job of hers.
    await stores.quotas.admit("dana2", DANA, spec(init_image="inputs/dana/image.png"), "tiny", [1])
    await stores.jobs.transition("dana2", JobState.QUEUED, JobState.CANCELLED, "cancelled")

    forgotten = await stores.users.forget(DANA.user_id, Actor(DANA.user_id))

    assert (forgotten.images, forgotten.inputs) == (2, 1)
    assert bucket.keys() == {"images/erin1/0.png", "inputs/erin/image.png"}


async def test_retention_deletes_expired_images_and_uploads_from_the_bucket(
    stores: Stores, bucket: Bucket
) -> None:
    await stores.run_job("old", DANA, 1.0)
    await stores.blobs.put("images/old/0.png", b"png")
    for name in ("expired", "orphan"):
        await stores.blobs.put(f"inputs/{name}/image.png", b"upload")
    # A job still waiting keeps its upload, however old.
    await stores.blobs.put("inputs/waiting/image.png", b"upload")
    await stores.quotas.admit(
        "queued", ERIN, spec(init_image="inputs/waiting/image.png"), "tiny", [1]
    )

    # Forty days on, everything stored now is past a 30-day retention.
    swept = await sweep(
        stores.sessions, stores.blobs, retention_days=30, now=utcnow() + timedelta(days=40)
    )

    assert (swept.jobs, swept.images, swept.inputs) == (["old"], 1, 2)
    assert bucket.keys() == {"inputs/waiting/image.png"}
