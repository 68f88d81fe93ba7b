"""LoRAs and draft mode over HTTP: the body's `loras` and `draft` through the core's door
on the package's server (the tiny LoRA configured as `ink` and as the draft LoRA), the
job view's labels, the `enhance` action, and the core rule's refusals as 400s."""

from __future__ import annotations

from typing import Any

import pytest

from bot.store.models import Job, JobState
from tests.configs import TINY_LORA, TINY_LORA_TRIGGER

from .conftest import RunningApi
from .test_references import ended
from .test_stability import error_of

pytestmark = pytest.mark.asyncio(loop_scope="package")


def body(**fields: Any) -> dict[str, Any]:
    return {"text_prompts": [{"text": "a lighthouse"}], "seed": 11, **fields}


async def test_a_lora_draft_runs_is_labelled_and_enhance_makes_it_at_full_quality(
    api: RunningApi,
) -> None:
    member = await api.member()
    loras = [{"name": TINY_LORA, "weight": 0.5}]
    response = await api.call(
        "POST", "/v1/jobs", headers=member.headers, json=body(loras=loras, draft=True)
    )
    assert response.status_code == 202, response.text
    view = await ended(api, member, response.json()["id"])
    assert view["status"] == "succeeded", view
    assert (view["draft"], view["loras"]) == (True, loras)
    spec = (await api.service.store.get(str(view["id"]))).spec
    assert (spec.draft, spec.steps, spec.sampler, spec.cfg) == (True, 4, "LCM", 1.5)
    assert spec.prompt == f"a lighthouse, {TINY_LORA_TRIGGER}"

    enhance = f"/v1/jobs/{view['id']}/actions/enhance"
    response = await api.call("POST", enhance, headers=member.headers)
    assert response.status_code == 202, response.text
    full = await ended(api, member, response.json()["id"])
    assert (full["status"], full["draft"], full["loras"]) == ("succeeded", False, loras)
    enhanced = (await api.service.store.get(str(full["id"]))).spec
    assert (enhanced.seeds, enhanced.sampler) == (spec.seeds, "Euler")
    assert enhanced.prompt == spec.prompt


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"loras": [{"name": "sepia"}]}, f"Unknown LoRA `sepia`; LoRAs for `tiny`: {TINY_LORA}."),
        ({"loras": [{"name": TINY_LORA, "weight": 3}]}, "loras[0][weight]:"),
        ({"loras": [{"name": TINY_LORA}] * 6}, "loras:"),
    ],
)
async def test_loras_the_model_cannot_take_are_refused_before_queueing(
    api: RunningApi, fields: dict[str, Any], message: str
) -> None:
    member = await api.member()
    response = await api.call("POST", "/v1/jobs", headers=member.headers, json=body(**fields))
    assert response.status_code == 400, response.text
    assert error_of(response)["message"].startswith(message)
    assert await api.count(Job, Job.user_id == member.user_id) == 0


async def test_a_plain_job_is_no_draft_in_its_view(api: RunningApi) -> None:
    member = await api.member()
    response = await api.call("POST", "/v1/jobs", headers=member.headers, json=body(steps=2))
    view = await ended(api, member, response.json()["id"])
    assert (view["status"], view["draft"], view["loras"]) == (JobState.SUCCEEDED, False, [])
