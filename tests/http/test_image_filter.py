"""The HTTP API answers an image the filter flagged as Stability does: CONTENT_FILTERED."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from PIL import Image

from bot.store.models import Job, JobState, Reservation, UsageEntry

from .conftest import RunningApi, serving

# A threshold every image reaches: every image is flagged.
FLAG_ALL = """
[quota]
images_per_day = 20

[moderation]
image_threshold = 0.0
"""


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def strict_api(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> AsyncIterator[RunningApi]:
    async with serving(tmp_path_factory.mktemp("http"), tiny_model_dir, FLAG_ALL) as running:
        yield running


@pytest.mark.asyncio(loop_scope="module")
async def test_flagged_images_come_back_grey_and_content_filtered(strict_api: RunningApi) -> None:
    api = strict_api
    member = await api.member()
    body = {"text_prompts": [{"text": "a red barn"}], "samples": 2, "seed": 11}
    response = await api.call(
        "POST", "/v1/generation/tiny/text-to-image", json=body, headers=member.headers
    )
    assert response.status_code == 200, response.text
    artifacts = response.json()["artifacts"]
    assert [(a["seed"], a["finishReason"]) for a in artifacts] == [
        (11, "CONTENT_FILTERED"),
        (12, "CONTENT_FILTERED"),
    ]
    for artifact in artifacts:
        image = Image.open(io.BytesIO(base64.b64decode(artifact["base64"])))
        assert image.size == (64, 64)
        assert len(image.convert("RGB").getcolors() or []) == 1  # plain grey, not the image

    (job,) = await api.rows(Job, Job.user_id == member.user_id)
    assert job.state is JobState.BLOCKED and job.client == "http"
    assert job.moderation is not None and job.moderation["policy"] == "block"
    assert await api.count(UsageEntry, UsageEntry.user_id == member.user_id) == 0
    assert await api.count(Reservation, Reservation.user_id == member.user_id) == 0

    # One sample as a PNG: the header says it was filtered.
    png = await api.call(
        "POST",
        "/v1/generation/tiny/text-to-image",
        json=body | {"samples": 1},
        headers=member.headers | {"Accept": "image/png"},
    )
    assert png.status_code == 200
    assert png.headers["Finish-Reason"] == "CONTENT_FILTERED"
