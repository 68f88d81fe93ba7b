"""The HTTP API's uploads with `[storage] backend = "s3"`: an init image and mask sent to
the masking route and the reference images of a blend are objects in the bucket before
their job is queued, the worker stages them from there, the job succeeds, and nothing is
left in the local spool."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from PIL import Image

from bot.store.models import Job
from engine.protocol import Mode
from tests.buckets import Bucket
from tests.databases import Database

from .conftest import RunningApi, png, serving
from .test_references import encoded, ended, styled_toml


@pytest_asyncio.fixture
async def bucket_api(
    tmp_path: Path,
    tiny_model_dir: Path,
    tiny_model_set: dict[str, Path],
    database: Database,
    bucket: Bucket,
) -> AsyncIterator[RunningApi]:
    extra = bucket.toml() + styled_toml(tiny_model_dir, tiny_model_set)
    async with serving(tmp_path, tiny_model_dir, extra, database) as running:
        yield running


def half_white() -> bytes:
    """A mask that repaints the image's left half."""
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    out = io.BytesIO()
    mask.save(out, format="PNG")
    return out.getvalue()


def spooled(api: RunningApi) -> list[Path]:
    """The files left in the local spool (the engine's folder), outside the database."""
    data_dir = api.config.storage.data_dir
    return [path for path in data_dir.rglob("*") if path.is_file() and path.suffix == ".png"]


async def test_uploads_sent_over_http_are_objects_in_the_bucket(
    bucket_api: RunningApi, bucket: Bucket
) -> None:
    api = bucket_api
    member = await api.member()
    masked = await api.call(
        "POST",
        "/v1/generation/tiny/image-to-image/masking",
        headers=member.headers | {"Accept": "application/json"},
        files={
            "init_image": ("init.png", png(64, 64)),
            "mask_image": ("mask.png", half_white()),
        },
        data={"text_prompts[0][text]": "a galaxy", "mask_source": "MASK_IMAGE_WHITE", "seed": 3},
    )
    assert masked.status_code == 200, masked.text
    (inpainted,) = await api.rows(Job, Job.user_id == member.user_id)
    assert inpainted.spec.mode is Mode.INPAINT
    blend = {
        "text_prompts": [{"text": "a garden"}],
        "engine_id": "styled",
        "mode": "blend",
        "reference_images": [encoded("red"), encoded("blue")],
        "seed": 4,
    }
    response = await api.call("POST", "/v1/jobs", json=blend, headers=member.headers)
    assert response.status_code == 202, response.text
    done = await ended(api, member, response.json()["id"])
    assert done["status"] == "succeeded", done
    (blended,) = await api.rows(Job, Job.id == done["id"])

    uploads = [*inpainted.spec.input_paths.values(), *blended.spec.references]
    assert len(uploads) == 4 and all(key.startswith("inputs/") for key in uploads)
    stored = bucket.keys()
    assert set(uploads) <= stored, stored
    assert bucket.read(inpainted.spec.init_image or "") == png(64, 64)  # the bytes sent
    results = {output.path for job in (inpainted, blended) for output in job.outputs}
    assert len(results) == 2 and results <= stored
    assert spooled(api) == []  # published, then removed here
