"""LoRAs and draft mode over HTTP: the body's `loras` and `draft` through the core's door
on the package's server (the tiny LoRA configured as `ink` and as the draft LoRA), the
job view's labels, the `enhance` action, and the core rule's refusals as 400s."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from bot.store.models import AuditEntry, Job, JobState, UsageEntry
from bot.store.quotas import HISTORY_JOBS, work_of
from tests.configs import TINY_LORA, TINY_LORA_TRIGGER

from .conftest import RunningApi
from .test_references import ended
from .test_stability import error_of

pytestmark = pytest.mark.asyncio(loop_scope="package")


def body(**fields: Any) -> dict[str, Any]:
    return {"text_prompts": [{"text": "a lighthouse"}], "seed": 11, **fields}


async def test_a_lora_draft_runs_is_labelled_charged_by_its_time_and_enhanced_at_full_quality(
    api: RunningApi,
) -> None:
    member = await api.member()
    # A run of the model to estimate the draft from (whichever test runs first).
    plain = await api.call("POST", "/v1/jobs", headers=member.headers, json=body(steps=2))
    assert (await ended(api, member, plain.json()["id"]))["status"] == "succeeded"
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
    await charged_by_its_measured_time(api, str(view["id"]))

    enhance = f"/v1/jobs/{view['id']}/actions/enhance"
    response = await api.call("POST", enhance, headers=member.headers)
    assert response.status_code == 202, response.text
    full = await ended(api, member, response.json()["id"])
    assert (full["status"], full["draft"], full["loras"]) == ("succeeded", False, loras)
    enhanced = (await api.service.store.get(str(full["id"]))).spec
    assert (enhanced.seeds, enhanced.sampler) == (spec.seeds, "Euler")
    assert enhanced.prompt == spec.prompt


async def charged_by_its_measured_time(api: RunningApi, job_id: str) -> None:
    """A draft's reservation is the model's GPU seconds per unit of work scaled to the
    draft's own steps (not the model's), and it is settled at the GPU time its run
    measured."""
    async with api.sessions() as session:
        draft = await session.get_one(Job, job_id)
        # The history the estimate read when the draft was queued.
        rows = await session.execute(
            select(Job.spec, Job.gpu_seconds)
            .where(
                Job.model == draft.model,
                Job.state == JobState.SUCCEEDED,
                Job.gpu_seconds > 0,
                Job.finished_at < draft.created_at,
            )
            .order_by(Job.finished_at.desc())
            .limit(HISTORY_JOBS)
        )
        history = [(work_of(spec), seconds) for spec, seconds in rows]
        entry = await session.scalar(select(UsageEntry).where(UsageEntry.job_id == job_id))
        audit = {
            row.action: row.params
            for row in await session.scalars(select(AuditEntry).where(AuditEntry.target == job_id))
        }
    per_unit = sum(seconds for _, seconds in history) / sum(units for units, _ in history)
    assert draft.spec.steps == 4 != api.config.models["tiny"].steps  # the draft's own steps
    estimate = per_unit * work_of(draft.spec)
    assert audit["quota.reserve"]["gpu_seconds"] == pytest.approx(round(estimate, 3), abs=1e-3)
    assert audit["quota.settle"]["reserved_gpu_seconds"] == audit["quota.reserve"]["gpu_seconds"]
    # Charged what the run measured, not its estimate.
    assert draft.gpu_seconds is not None and draft.gpu_seconds > 0
    assert entry is not None and entry.gpu_seconds == draft.gpu_seconds
    assert entry.cost == api.quotas.rules.pricing.cost(draft.gpu_seconds) > 0
    assert audit["quota.settle"]["gpu_seconds"] == round(draft.gpu_seconds, 3)


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
