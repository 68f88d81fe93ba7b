"""The `tile-texture` style preset over HTTP on the package's server: the job runs tiled
(the engine's circular padding), as Discord's --tile does."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from bot.store.models import Job, JobState

from .conftest import RunningApi

pytestmark = pytest.mark.asyncio(loop_scope="package")

PATH = "/v1/generation/tiny/text-to-image"


async def test_the_tile_texture_preset_runs_the_job_tiled(api: RunningApi) -> None:
    member = await api.member()
    body = {"text_prompts": [{"text": "old mossy cobblestones"}], "steps": 3, "seed": 5}
    images: dict[bool, bytes] = {}
    for tiled, extra in ((True, {"style_preset": "tile-texture"}), (False, {})):
        response = await api.call(
            "POST",
            PATH,
            json={**body, **extra},
            headers={"Accept": "image/png", **member.headers},
        )
        assert response.status_code == 200, response.text
        images[tiled] = response.content
    jobs = await api.rows(Job, Job.user_id == member.user_id)
    assert sorted((job.spec.tile, job.state) for job in jobs) == [
        (False, JobState.SUCCEEDED),
        (True, JobState.SUCCEEDED),
    ]
    with Image.open(io.BytesIO(images[True])) as image:
        assert json.loads(image.text["atelier"])["tile"] is True
    # The same prompt and seed: only the engine's tiling tells the two images apart.
    assert images[True] != images[False]
