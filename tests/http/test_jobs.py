"""The job API (queue, poll, cancel), the account endpoints, health and the OpenAPI document."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from typing import Any

import pytest
from PIL import Image

from bot.jobs.spec import JobSpec
from bot.quota import Limits
from bot.store.audit import Actor
from bot.store.health import HEARTBEAT_EVERY
from bot.store.models import Heartbeat, QuotaScope
from tests.stores import writes_to

from .conftest import GUILD_ID, Member, RunningApi

pytestmark = pytest.mark.asyncio(loop_scope="package")

JOB_FIELDS = {
    "id",
    "status",
    "engine_id",
    "position",
    "eta_seconds",
    "progress",
    "artifacts",
    "error",
    "created_at",
    "finished_at",
    "cached_from",
    "draft",
    "loras",
}


async def poll(api: RunningApi, member: Member, job_id: str, until: Any) -> dict[str, Any]:
    """GET the job until `until(body)` holds, as a client polling for its result would."""
    async with asyncio.timeout(120):
        while True:
            response = await api.call("GET", f"/v1/jobs/{job_id}", headers=member.headers)
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            assert set(body) == JOB_FIELDS
            if until(body):
                return body
            await asyncio.sleep(0.05)


async def test_a_job_is_queued_at_once_then_polled_to_its_images(api: RunningApi) -> None:
    member = await api.member()
    response = await api.call(
        "POST",
        "/v1/jobs",
        headers=member.headers,
        json={"text_prompts": [{"text": "a lighthouse"}], "steps": 3, "seed": 9},
    )
    assert response.status_code == 202, response.text
    created = response.json()
    assert set(created) == {"id", "status", "position", "eta_seconds"}
    assert created["status"] == "queued" and created["position"] >= 1
    assert created["eta_seconds"] >= 0
    assert response.headers["Location"] == f"/v1/jobs/{created['id']}"

    done = await poll(api, member, created["id"], lambda body: body["status"] == "succeeded")
    assert done["engine_id"] == "tiny" and done["position"] is None and done["progress"] is None
    (artifact,) = done["artifacts"]
    assert (artifact["seed"], artifact["finishReason"]) == (9, "SUCCESS")
    with Image.open(io.BytesIO(base64.b64decode(artifact["base64"]))) as image:
        assert image.size == (64, 64)
    job = await api.service.store.get(created["id"])
    assert (job.client, job.synchronous, job.api_key_id) == ("http", False, member.key_id)


async def test_a_running_job_shows_its_progress_and_can_be_cancelled(api: RunningApi) -> None:
    member = await api.member()
    response = await api.call(
        "POST",
        "/v1/jobs",
        headers=member.headers,
        json={"text_prompts": [{"text": "a slow river"}], "steps": 150, "samples": 4},
    )
    job_id = response.json()["id"]
    running = await poll(api, member, job_id, lambda body: body["progress"] is not None)
    assert running["status"] == "running"
    assert 0 <= running["progress"]["step"] <= running["progress"]["total"] >= 150
    assert running["artifacts"] is None

    cancelled = await api.call("DELETE", f"/v1/jobs/{job_id}", headers=member.headers)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert {a["finishReason"] for a in cancelled.json()["artifacts"]} == {"ERROR"}
    again = await api.call("DELETE", f"/v1/jobs/{job_id}", headers=member.headers)
    assert again.status_code == 409 and again.json()["name"] == "conflict"


async def test_another_members_job_is_not_found(api: RunningApi) -> None:
    owner, other = await api.member(), await api.member()
    response = await api.call(
        "POST",
        "/v1/jobs",
        headers=owner.headers,
        json={"text_prompts": [{"text": "a private fox"}], "steps": 3},
    )
    job_id = response.json()["id"]
    for method in ("GET", "DELETE"):
        refused = await api.call(method, f"/v1/jobs/{job_id}", headers=other.headers)
        assert refused.status_code == 404, method
    assert (await api.call("GET", "/v1/jobs/nope", headers=owner.headers)).status_code == 404
    mine = await api.call("DELETE", f"/v1/jobs/{job_id}", headers=owner.headers)
    assert mine.status_code in (200, 409), mine.text  # 409: it finished first


async def test_member_defaults_styles_and_samplers_shape_the_job(api: RunningApi) -> None:
    member = await api.member()
    await api.users.set_defaults(
        member.user_id,
        "member",
        {"steps": 2, "sampler": "Heun", "negative_prompt": "blurry"},
        Actor(member.user_id, GUILD_ID),
    )

    async def queued_spec(body: dict[str, Any]) -> JobSpec:
        response = await api.call("POST", "/v1/jobs", json=body, headers=member.headers)
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        await api.call("DELETE", f"/v1/jobs/{job_id}", headers=member.headers)
        return (await api.service.store.get(job_id)).spec

    spec = await queued_spec(
        {
            "text_prompts": [
                {"text": "a fox", "weight": 1},
                {"text": "a top hat", "weight": 2},
                {"text": "rain", "weight": -1},
            ],
            "style_preset": "cinematic",
            "clip_guidance_preset": "FAST_BLUE",
        }
    )
    assert spec.prompt == "cinematic still of a top hat, a fox"
    # The style applies to each weighted prompt the engine encodes, not only to the text
    # people read (before, the blend went unstyled and the preset changed nothing).
    assert spec.blend == (("cinematic still of a top hat", 2.0), ("cinematic still of a fox", 1.0))
    assert spec.negative_prompt == "rain, cartoon"
    assert (spec.steps, spec.sampler) == (2, "Heun")  # the member's defaults
    spec = await queued_spec(
        {
            "text_prompts": [{"text": "a fox"}],
            "sampler": "K_DPMPP_2M",
            "steps": 4,
            "style_preset": "anime",
        }
    )
    assert (spec.prompt, spec.negative_prompt) == ("a fox", "blurry")  # anime: not configured
    assert (spec.steps, spec.sampler) == (4, "DPM++ 2M")

    unknown = await api.call(
        "POST",
        "/v1/jobs",
        headers=member.headers,
        json={"text_prompts": [{"text": "a fox"}], "style_preset": "vaporwave"},
    )
    assert unknown.status_code == 400
    assert unknown.json()["message"].startswith("style_preset: unknown style `vaporwave`")


async def test_engines_account_and_balance(api: RunningApi) -> None:
    member = await api.member(role_ids=(77,))
    engines = (await api.call("GET", "/v1/engines/list", headers=member.headers)).json()
    assert [(e["id"], e["type"]) for e in engines] == [("tiny", "PICTURE")]
    account = (await api.call("GET", "/v1/user/account", headers=member.headers)).json()
    assert account["id"] == str(member.user_id) and account["key_id"] == member.key_id
    assert account["organizations"] == [
        {
            "id": str(GUILD_ID),
            "name": f"Discord server {GUILD_ID}",
            "role": "MEMBER",
            "is_default": True,
        }
    ]

    balance = (await api.call("GET", "/v1/user/balance", headers=member.headers)).json()
    assert (balance["credits"], balance["unlimited"], balance["currency"]) == (1e9, True, "EUR")
    # The key keeps the member's roles: a role's limits apply to it.
    await api.quotas.set_policy(
        QuotaScope.ROLE, 77, Limits(cost_per_day=0.5, images_per_day=10), Actor(1, GUILD_ID)
    )
    balance = (await api.call("GET", "/v1/user/balance", headers=member.headers)).json()
    assert (balance["credits"], balance["unlimited"], balance["images_left"]) == (0.5, False, 10)


async def test_health_reports_the_engines_and_reads_the_heartbeat(api: RunningApi) -> None:
    # Unauthenticated and called at will: it reads the heartbeat the timer writes. Only
    # the timer writes meanwhile (once per HEARTBEAT_EVERY, should a beat fall inside).
    started = time.monotonic()
    with writes_to(api.sessions) as written:
        for _ in range(20):
            response = await api.call("GET", "/healthz")  # no key needed
    beats = int((time.monotonic() - started) // HEARTBEAT_EVERY.total_seconds()) + 1
    assert all(statement.startswith("UPDATE heartbeats") for statement in written), written
    assert len(written) <= beats, written
    assert response.status_code == 200, response.text
    health = response.json()
    assert (health["status"], health["database"]) == ("ok", "writable")
    (engine,) = health["engines"]
    assert engine["device"] == "cpu" and isinstance(engine["alive"], bool)
    if engine["alive"]:
        assert engine["loaded"] in ([], ["tiny"])
    (beat,) = await api.rows(Heartbeat)
    assert beat.service == "http"


async def test_the_openapi_document_is_served_from_the_models(api: RunningApi) -> None:
    document = (await api.call("GET", "/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    assert {
        "/v1/engines/list",
        "/v1/user/account",
        "/v1/user/balance",
        "/v1/generation/{engine_id}/text-to-image",
        "/v1/generation/{engine_id}/image-to-image",
        "/v1/generation/{engine_id}/image-to-image/masking",
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/actions/{action}",
        "/healthz",
    } == set(document["paths"])
    schemas = document["components"]["schemas"]
    masking = schemas["MaskingRequest"]
    assert {"text_prompts[0][text]", "init_image", "mask_source"} <= set(masking["required"])
    assert masking["properties"]["init_image"]["format"] == "binary"
    text_to_image = schemas["TextToImageRequest"]["properties"]
    assert text_to_image["width"]["anyOf"][0]["multipleOf"] == 64
    assert set(schemas["Sampler"]["enum"]) >= {"K_EULER_ANCESTRAL", "K_DPMPP_2M", "DDIM"}
