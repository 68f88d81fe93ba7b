"""Style references and blends over POST /v1/jobs: the body's images and job ids through
the core's door, on a model with the tiny IP-Adapter and on one without."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from bot.store.models import Job, JobState

from .conftest import Member, RunningApi, png, serving


async def ended(api: RunningApi, member: Member, job_id: str) -> dict[str, object]:
    async with asyncio.timeout(120):
        while True:
            response = await api.call("GET", f"/v1/jobs/{job_id}", headers=member.headers)
            job: dict[str, object] = response.json()
            if job["status"] not in ("queued", "running"):
                return job
            await asyncio.sleep(0.05)


def encoded(colour: str) -> str:
    return "data:image/png;base64," + base64.b64encode(png(64, 64, colour)).decode()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def styled_api(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_model_dir: Path,
    tiny_model_set: dict[str, Path],
) -> AsyncIterator[RunningApi]:
    """A server whose second model, `styled`, has the tiny IP-Adapter; `tiny` has none."""
    styled = styled_toml(tiny_model_dir, tiny_model_set)
    async with serving(tmp_path_factory.mktemp("http"), tiny_model_dir, styled) as running:
        yield running


def styled_toml(tiny_model_dir: Path, tiny_model_set: dict[str, Path]) -> str:
    """`[models.styled]`: the tiny model with the tiny IP-Adapter (blends, style references)."""
    adapter = tiny_model_set["ip-adapter"]
    return f"""
[models.styled]
source = "{tiny_model_dir}"
width = 64
height = 64
steps = 3
sampler = "Euler"
ip_adapter = "{adapter / "ip-adapter.safetensors"}"
image_encoder = "{adapter / "image_encoder"}"
"""


@pytest.mark.asyncio(loop_scope="module")
async def test_a_blend_of_body_images_runs_and_a_model_without_an_adapter_refuses_it(
    styled_api: RunningApi,
) -> None:
    api = styled_api
    member = await api.member()
    body = {
        "text_prompts": [{"text": "a garden"}],
        "engine_id": "styled",
        "mode": "blend",
        "reference_images": [encoded("red"), encoded("blue")],
        "seed": 4,
    }
    response = await api.call("POST", "/v1/jobs", json=body, headers=member.headers)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    done = await ended(api, member, job_id)
    assert done["status"] == "succeeded", done
    (job,) = await api.rows(Job, Job.id == job_id)
    assert job.spec.reference_mode == "blend" and len(job.spec.references) == 2
    assert all(path.startswith("inputs/") for path in job.spec.references)

    # The same body for the model without an IP-Adapter: refused, nothing queued.
    refused = await api.call(
        "POST", "/v1/jobs", json=body | {"engine_id": "tiny"}, headers=member.headers
    )
    assert refused.status_code == 400, refused.text
    assert "has no IP-Adapter configured" in refused.json()["message"]

    # A style reference by job id: the blend's result, found for its own member.
    styled = body | {"mode": "style", "reference_images": [], "style_references": [job_id]}
    response = await api.call("POST", "/v1/jobs", json=styled, headers=member.headers)
    assert response.status_code == 202, response.text
    (by_id,) = await api.rows(Job, Job.id == response.json()["id"])
    assert by_id.spec.reference_mode == "style" and len(by_id.spec.references) == 1

    # A style reference by the job's link on this API (`?image=1`) runs to success, with
    # the blend's image copied as its input byte for byte. (Another seed: the same one would
    # be answered by the job above's run, not run itself.)
    link = f"{api.url}/v1/jobs/{job_id}?image=1"
    linked = styled | {"style_references": [link], "seed": 5}
    response = await api.call("POST", "/v1/jobs", json=linked, headers=member.headers)
    assert response.status_code == 202, response.text
    by_link = await ended(api, member, response.json()["id"])
    assert by_link["status"] == "succeeded", by_link
    (ran,) = await api.rows(Job, Job.id == by_link["id"])
    assert ran.cached_from is None and ran.gpu_seconds
    (reference,) = ran.spec.references
    (blended,) = (await api.service.store.get(job_id)).outputs
    copied = await api.service.blobs.read(reference)
    assert reference.startswith("inputs/") and copied is not None
    assert copied == await api.service.blobs.read(blended.path)

    # Another member's result from the HTTP API is private: unknown to them.
    other = await api.member()
    response = await api.call("POST", "/v1/jobs", json=styled, headers=other.headers)
    assert response.status_code == 400, response.text
    assert f"I know no result `{job_id}`" in response.json()["message"]
    assert await api.count(Job, Job.user_id == other.user_id, Job.state == JobState.QUEUED) == 0


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("image", ["not base64!", "data:image/png;base64,ÿÿÿÿ"])
async def test_a_reference_image_that_is_not_base64_is_a_400_and_queues_nothing(
    styled_api: RunningApi, image: str
) -> None:
    member = await styled_api.member()
    body = {
        "text_prompts": [{"text": "a garden"}],
        "engine_id": "styled",
        "mode": "blend",
        "reference_images": [encoded("red"), image],
    }
    response = await styled_api.call("POST", "/v1/jobs", json=body, headers=member.headers)
    assert response.status_code == 400, response.text
    assert response.json()["message"] == ("reference_images[1]: not base64 (send a PNG, base64)")
    assert await styled_api.count(Job, Job.user_id == member.user_id) == 0
