"""`POST /v1/jobs/{id}/actions/{action}`: every action of the core's registry over HTTP
(derived from bot.core.actions.ACTIONS, so a new entry is covered here at once), the job
it queues being the one Discord's button queues, and its refusals."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image, ImageDraw

from bot.core.actions import ACTIONS, BY_NAME, Action, ActionName, Words
from bot.core.refusals import Refusal
from bot.http.routes import api_document
from bot.jobs.spec import InputImage, Inputs, JobSpec
from bot.store.audit import Actor
from bot.store.jobs import Requester
from bot.store.models import AuditEntry, Job, JobState
from engine.protocol import Mode

from .conftest import GUILD_ID, Member, RunningApi, png
from .test_stability import error_of, wait_for_state

pytestmark = pytest.mark.asyncio(loop_scope="package")

# What each action needs in its body (a per-image action: the second image).
REMIX = {"prompt": "a green fox --seed 77", "negative_prompt": "fog"}


ZOOM = 1.5
# The single-image source's size (not square, so Make Square has a border to paint).
SINGLE = (128, 64)


def region_mask() -> str:
    """Vary (Region)'s mask for the single-image source: its left half repainted."""
    image = Image.new("L", SINGLE, "black")
    ImageDraw.Draw(image).rectangle((0, 0, SINGLE[0] // 2, SINGLE[1]), fill="white")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def body_for(action: Action) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if action.per_image:
        body["image"] = 1 if action.single_image else 2
    if action.takes_words:
        body |= REMIX
    if action.takes_zoom:
        body["zoom"] = ZOOM
    if action.takes_mask:
        body["mask"] = region_mask()
    return body


async def finished_job(
    api: RunningApi,
    member: Member,
    samples: int = 2,
    size: tuple[int, int] | None = None,
    draft: bool = False,
) -> Job:
    body: dict[str, Any] = {
        "text_prompts": [{"text": "a red fox"}],
        "steps": 2,
        "samples": samples,
        "seed": 40,
        "draft": draft,
    }
    if size is not None:
        body["width"], body["height"] = size
    response = await api.call("POST", "/v1/jobs", headers=member.headers, json=body)
    assert response.status_code == 202, response.text
    return await wait_for_state(api, response.json()["id"], JobState.SUCCEEDED)


async def failed_job(api: RunningApi, member: Member) -> Job:
    """A job the engine failed: its image was missing when it ran; it is there now, so the
    job can be asked for again."""
    path = f"inputs/failing-{member.user_id}/image.png"
    spec = JobSpec(
        prompt="a fox in fog",
        model="tiny",
        width=64,
        height=64,
        steps=2,
        cfg=7.0,
        sampler="Euler",
        seed=5,
        count=1,
        mode=Mode.IMG2IMG,
        init_image=path,
        strength=0.5,
    )
    requester = Requester.over_http(
        user_id=member.user_id,
        user_name="member",
        guild_id=GUILD_ID,
        role_ids=(),
        api_key_id=member.key_id,
        synchronous=False,
    )
    submitted = await api.service.submit(spec, requester)
    job = await wait_for_state(api, submitted.job.id, JobState.FAILED, JobState.SUCCEEDED)
    assert job.state is JobState.FAILED
    image = api.config.storage.data_dir / path
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(png(64, 64))
    return job


async def running_job(api: RunningApi, member: Member) -> Job:
    response = await api.call(
        "POST",
        "/v1/jobs",
        headers=member.headers,
        json={"text_prompts": [{"text": "a slow river"}], "steps": 150, "samples": 4},
    )
    assert response.status_code == 202, response.text
    return await api.service.store.get(response.json()["id"])


async def job_for(api: RunningApi, member: Member, action: Action) -> Job:
    """A job in a state `action` applies to."""
    if JobState.SUCCEEDED in action.states:
        if action.drafts_only:  # Enhance: a --draft job (the api's model has a draft LoRA)
            return await finished_job(api, member, draft=True)
        if action.single_image:
            # Not square, so Make Square has a border to paint.
            return await finished_job(api, member, samples=1, size=SINGLE)
        return await finished_job(api, member)
    if JobState.FAILED in action.states:
        return await failed_job(api, member)
    return await running_job(api, member)


async def act(
    api: RunningApi, member: Member, job_id: str, action: str, body: dict[str, Any] | None
) -> Any:
    path = f"/v1/jobs/{job_id}/actions/{action}"
    return await api.call("POST", path, headers=member.headers, json=body)


@pytest.mark.parametrize("action", ACTIONS, ids=[action.name.value for action in ACTIONS])
async def test_every_registered_action_works_over_http(api: RunningApi, action: Action) -> None:
    member = await api.member()
    job = await job_for(api, member, action)
    response = await act(api, member, job.id, action.name, body_for(action))
    if action.makes_job:
        assert response.status_code == 202, response.text
        made = response.json()
        assert response.headers["Location"] == f"/v1/jobs/{made['id']}"
        queued = await api.service.store.get(made["id"])
        assert (queued.user_id, queued.client, queued.api_key_id) == (
            member.user_id,
            "http",
            member.key_id,
        )
        # The job it queued runs: an upscale of a 2-step job gets the steps it needs.
        done = await wait_for_state(api, queued.id, JobState.SUCCEEDED, JobState.FAILED)
        assert done.state is JobState.SUCCEEDED, done.error
    elif action.name is ActionName.CANCEL:
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "cancelled"
        assert (await api.service.store.get(job.id)).state is JobState.CANCELLED
    else:
        assert action.name is ActionName.DELETE
        assert response.status_code == 200, response.text
        assert response.json()["artifacts"] == []
        assert (await api.service.store.get(job.id)).outputs == []
        assert not (api.config.storage.data_dir / "images" / job.id).exists()


@pytest.mark.parametrize(
    "action",
    [action for action in ACTIONS if action.makes_job],
    ids=[action.name.value for action in ACTIONS if action.makes_job],
)
async def test_an_action_over_http_queues_the_job_discords_button_queues(
    api: RunningApi, action: Action
) -> None:
    """The same source through the core's draft (what the button builds) and through the
    route: the same mode, strength, size, source, words and settings; the same seed where
    the action keeps it, a new one where it rerolls."""
    member = await api.member()
    job = await job_for(api, member, action)
    number = body_for(action).get("image")
    source = await api.core.acting.source(action, job, number)
    assert not isinstance(source, Refusal)
    zoom = ZOOM if action.takes_zoom else None
    words = Words(prompt=REMIX["prompt"], negative=REMIX["negative_prompt"], zoom=zoom)
    draft = api.core.acting.draft(action, source, words if action.takes_words else None)
    # The editor's mask, as the door saves it (its folder is the request's own).
    mask = InputImage("inputs/editor/mask.png", *SINGLE) if action.takes_mask else None
    (from_button,) = await draft.build({}, Inputs(mask=mask))

    response = await act(api, member, job.id, action.name, body_for(action))
    assert response.status_code == 202, response.text
    from_http = (await api.service.store.get(response.json()["id"])).spec

    # A variation, a reroll, each outpainting (zoom, square, pan) and a region draw a new seed.
    rerolls = action.name is ActionName.REROLL or from_button.mode in (
        Mode.VARIATION,
        Mode.OUTPAINT,
        Mode.INPAINT,
    )
    # The mask is saved where each request's inputs go.
    mine = {"seed", "mask_image"}
    assert from_http.model_dump(exclude=mine) == from_button.model_dump(exclude=mine)
    assert (from_http.mask_image is None) == (mask is None)
    if rerolls:
        assert from_http.seed != source.spec.seed
    else:
        assert from_http.seed == from_button.seed
    if action.per_image:
        assert (from_http.source_job, from_http.source_image) == (job.id, number)
        assert from_http.mode in (Mode.VARIATION, Mode.UPSCALE, Mode.OUTPAINT, Mode.INPAINT)
    await api.call("DELETE", f"/v1/jobs/{response.json()['id']}", headers=member.headers)


async def test_actions_are_refused_in_the_apis_error_shape_and_audited(api: RunningApi) -> None:
    member, other = await api.member(), await api.member()
    job = await finished_job(api, member)

    unknown = await act(api, member, job.id, "zoom", {})
    assert unknown.status_code == 404 and error_of(unknown)["name"] == "not_found"
    theirs = await act(api, other, job.id, "variation", {"image": 1})
    assert theirs.status_code == 404  # another member's job is as unknown as a missing one
    no_image = await act(api, member, job.id, "upscale", {})
    assert no_image.status_code == 400 and "from 1 to 2" in error_of(no_image)["message"]
    words = await act(api, member, job.id, "reroll", {"prompt": "a cat"})
    assert words.status_code == 400 and error_of(words)["message"].startswith("prompt:")
    no_words = await act(api, member, job.id, "remix", {})
    assert no_words.status_code == 400 and error_of(no_words)["message"].startswith("prompt:")
    not_draft = await act(api, member, job.id, "enhance", None)
    assert not_draft.status_code == 400
    assert error_of(not_draft)["message"].startswith("This job is not a draft")
    not_running = await act(api, member, job.id, "cancel", None)
    assert not_running.status_code == 409 and error_of(not_running)["name"] == "conflict"

    await api.guilds.block("walrus", Actor(1, GUILD_ID))
    blocked = await act(api, member, job.id, "remix", {"prompt": "a walrus"})
    assert blocked.status_code == 403 and error_of(blocked)["name"] == "content_moderation"
    assert "walrus" in error_of(blocked)["message"]
    assert await api.count(Job, Job.user_id == member.user_id) == 1  # nothing queued

    refused = await api.rows(AuditEntry, AuditEntry.actor_id == member.user_id)
    kinds = {
        (entry.action, entry.params.get("kind"))
        for entry in refused
        if entry.action.endswith(".refused")
    }
    assert ("http.upscale.refused", "input") in kinds
    assert ("http.enhance.refused", "input") in kinds
    assert ("http.cancel.refused", "not_ready") in kinds
    assert ("http.remix.refused", "moderation") in kinds
    strikes = [e for e in refused if e.action == "moderation.blocked"]
    assert [e.params["command"] for e in strikes] == ["http.remix"]


async def test_the_documents_actions_are_the_registrys() -> None:
    post = api_document(["tiny"])["paths"]["/v1/jobs/{job_id}/actions/{action}"]["post"]
    (action,) = [p for p in post["parameters"] if p["name"] == "action"]
    assert action["schema"]["enum"] == list(BY_NAME)
    assert post["requestBody"]["required"] is False


async def test_recreate_over_http_makes_the_originals_images_again(api: RunningApi) -> None:
    """On the same device (CPU, the tiny model) a recreated job's images are the original's,
    pixel for pixel, from a run of its own (an action never asks the result cache). The
    PNG files differ only in their recipe text, which names each job."""
    member = await api.member()
    job = await finished_job(api, member)
    response = await act(api, member, job.id, "recreate", None)
    assert response.status_code == 202, response.text
    again = await wait_for_state(api, response.json()["id"], JobState.SUCCEEDED)
    assert again.cached_from is None and again.gpu_seconds
    assert again.spec == job.spec

    async def images(job_id: str) -> list[tuple[tuple[int, int], str, bytes]]:
        view = await api.call("GET", f"/v1/jobs/{job_id}", headers=member.headers)
        pictures = [
            Image.open(io.BytesIO(base64.b64decode(artifact["base64"])))
            for artifact in view.json()["artifacts"]
        ]
        return [(picture.size, picture.mode, picture.tobytes()) for picture in pictures]

    original = await images(job.id)
    assert len(original) == 2 and original[0] != original[1]
    assert await images(again.id) == original
