"""An upload two members' jobs read (a re-roll or remix copies its source's spec) stays
while one of them still reads it, whatever the image filter did to the other."""

from __future__ import annotations

from pathlib import Path

from bot.jobs.spec import Options
from bot.store.models import JobState
from tests.stores import open_stores

from .test_image_filter import FLAG_ALL, IN_NSFW_CHANNEL, MEMBER, run_jobs, upload


async def test_a_flagged_upload_another_members_job_reads_is_kept(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    async with open_stores(tmp_path, FLAG_ALL, tiny_model_dir) as stores:
        inputs = upload(stores)
        assert inputs.image is not None
        options = Options(prompt="a red barn", seed=1, strength=0.5)
        # Made in an age-restricted channel (its inputs are not screened), then the
        # same spec again by another member elsewhere, as a re-roll makes it.
        allowed, rerolled = await run_jobs(
            stores, (options, IN_NSFW_CHANNEL, inputs), (options, MEMBER, inputs)
        )
        assert rerolled.state is JobState.BLOCKED
        assert rerolled.moderation is not None
        assert rerolled.moderation["inputs"]["init_image"]["flagged"] is True
        assert allowed.state is JobState.SUCCEEDED
        assert (stores.config.storage.data_dir / inputs.image.path).is_file()
