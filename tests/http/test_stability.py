"""Stability v1 client code, as its documentation writes it, against Atelier's HTTP API.

The `stability_*` functions are that client code (plain `requests`, files written
the way the documentation's samples write them); tests run them in a thread
against the server in this process and check the images, the jobs, the ledger and
the audit log behind them.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from bot.app import build_http, build_moderation
from bot.jobs.spec import Options, build_spec
from bot.quota import Limits
from bot.store.audit import Actor
from bot.store.jobs import Requester
from bot.store.models import AuditEntry, Job, JobState, QuotaScope, Reservation, UsageEntry
from engine.protocol import Mode

from .conftest import GUILD_ID, Member, RunningApi, png

pytestmark = pytest.mark.asyncio(loop_scope="package")


# -- client code, the way Stability's documentation writes it -----------------------------


def stability_text_to_image(api_host: str, api_key: str, out: Path) -> list[dict[str, Any]]:
    engine_id = "tiny"
    response = requests.post(
        f"{api_host}/v1/generation/{engine_id}/text-to-image",
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Authorization": f"Bearer {api_key}",
        },
        json={
            "text_prompts": [{"text": "A lighthouse on a cliff"}],
            "cfg_scale": 7,
            "height": 64,
            "width": 64,
            "samples": 2,
            "steps": 3,
            "seed": 42,
        },
        timeout=120,
    )
    if response.status_code != 200:
        raise Exception("Non-200 response: " + str(response.text))
    data = response.json()
    for i, image in enumerate(data["artifacts"]):
        with open(out / f"v1_txt2img_{i}.png", "wb") as f:
            f.write(base64.b64decode(image["base64"]))
    return list(data["artifacts"])


def stability_image_to_image(
    api_host: str, api_key: str, init_image: Path, out: Path
) -> list[dict[str, Any]]:
    engine_id = "tiny"
    with open(init_image, "rb") as init:
        response = requests.post(
            f"{api_host}/v1/generation/{engine_id}/image-to-image",
            headers={"Accept": "application/json", "Authorization": f"Bearer {api_key}"},
            files={"init_image": init},
            data={
                "image_strength": 0.35,
                "init_image_mode": "IMAGE_STRENGTH",
                "text_prompts[0][text]": "Galactic dog with a cape",
                "cfg_scale": 7,
                "samples": 1,
                "steps": 3,
                "seed": 7,
            },
            timeout=120,
        )
    if response.status_code != 200:
        raise Exception("Non-200 response: " + str(response.text))
    data = response.json()
    for i, image in enumerate(data["artifacts"]):
        with open(out / f"v1_img2img_{i}.png", "wb") as f:
            f.write(base64.b64decode(image["base64"]))
    return list(data["artifacts"])


def stability_masking(
    api_host: str, api_key: str, files: dict[str, Path], data: dict[str, Any], out: Path
) -> list[dict[str, Any]]:
    engine_id = "tiny"
    opened = {name: open(path, "rb") for name, path in files.items()}  # noqa: SIM115
    try:
        response = requests.post(
            f"{api_host}/v1/generation/{engine_id}/image-to-image/masking",
            headers={"Accept": "application/json", "Authorization": f"Bearer {api_key}"},
            files=opened,
            data={
                "text_prompts[0][text]": "A large spiral galaxy",
                "samples": 1,
                "steps": 3,
                "seed": 11,
                **data,
            },
            timeout=120,
        )
    finally:
        for handle in opened.values():
            handle.close()
    if response.status_code != 200:
        raise Exception("Non-200 response: " + str(response.text))
    artifacts = response.json()["artifacts"]
    for i, image in enumerate(artifacts):
        with open(out / f"v1_masking_{i}.png", "wb") as f:
            f.write(base64.b64decode(image["base64"]))
    return list(artifacts)


# -- helpers ------------------------------------------------------------------------------


def size_of(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def decoded(artifact: dict[str, Any]) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(artifact["base64"])))
    image.load()
    return image


def encoded(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def square_mask() -> Image.Image:
    """White (repaint) in the middle, black (keep) around it."""
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    return mask


def mask_levels(api: RunningApi, job: Job) -> tuple[int, int]:
    """The saved mask's level in the middle and in a corner, as the engine reads it."""
    with Image.open(api.config.storage.data_dir / job.spec.input_paths["mask_image"]) as saved:
        levels = saved.convert("L")
        return int(levels.getpixel((32, 32))), int(levels.getpixel((2, 2)))  # type: ignore[arg-type]


def error_of(response: requests.Response) -> dict[str, Any]:
    """Stability's error shape, checked: an id, a name and a message."""
    body = response.json()
    assert set(body) == {"id", "name", "message"}, body
    assert body["id"] and body["message"]
    return dict(body)


async def only_job(api: RunningApi, member: Member) -> Job:
    (job,) = await api.rows(Job, Job.user_id == member.user_id)
    return job


async def wait_for_state(api: RunningApi, job_id: str, *states: JobState) -> Job:
    async with asyncio.timeout(120):
        while True:
            job = await api.service.store.get(job_id)
            if job.state in states:
                return job
            await asyncio.sleep(0.05)


# -- the tests ----------------------------------------------------------------------------


async def test_text_to_image_saves_base64_artifacts_as_png_files(
    api: RunningApi, tmp_path: Path
) -> None:
    member = await api.member()
    artifacts = await asyncio.to_thread(stability_text_to_image, api.url, member.key, tmp_path)

    assert [size_of(tmp_path / f"v1_txt2img_{i}.png") for i in range(2)] == [(64, 64)] * 2
    assert [a["seed"] for a in artifacts] == [42, 43]
    assert {a["finishReason"] for a in artifacts} == {"SUCCESS"}
    job = await only_job(api, member)
    assert (job.state, job.client, job.api_key_id, job.seeds) == (
        JobState.SUCCEEDED,
        "http",
        member.key_id,
        [42, 43],
    )
    assert job.delivered_at is not None  # nothing for Discord to deliver
    (entry,) = await api.rows(UsageEntry, UsageEntry.user_id == member.user_id)
    assert (entry.job_id, entry.images, entry.currency) == (job.id, 2, "EUR")
    assert entry.gpu_seconds > 0 and entry.cost == pytest.approx(entry.gpu_seconds / 1000)
    trail = await api.rows(AuditEntry, AuditEntry.target == job.id)
    assert [e.action for e in trail][:2] == ["job.queued", "quota.reserve"]
    for entry_ in trail:
        if entry_.action.startswith("job."):
            assert entry_.params["client"] == "http", entry_.action
            assert entry_.params["key_id"] == member.key_id
    assert member.key not in repr([e.params for e in trail])


async def test_image_to_image_with_a_multipart_body_keeps_the_init_images_size(
    api: RunningApi, tmp_path: Path
) -> None:
    member = await api.member()
    init = tmp_path / "init_image.png"
    init.write_bytes(png(128, 64, "navy"))
    artifacts = await asyncio.to_thread(
        stability_image_to_image, api.url, member.key, init, tmp_path
    )

    assert size_of(tmp_path / "v1_img2img_0.png") == (128, 64)
    assert [(a["seed"], a["finishReason"]) for a in artifacts] == [(7, "SUCCESS")]
    job = await only_job(api, member)
    assert (job.spec.mode, job.spec.strength) == (Mode.IMG2IMG, 0.65)  # 1 - image_strength
    assert (api.config.storage.data_dir / job.spec.input_paths["init_image"]).is_file()


async def test_masking_with_a_white_mask_repaints_the_white(
    api: RunningApi, tmp_path: Path
) -> None:
    member = await api.member()
    init, mask_path = tmp_path / "init.png", tmp_path / "mask.png"
    init.write_bytes(png(64, 64, "green"))
    square_mask().save(mask_path)
    artifacts = await asyncio.to_thread(
        stability_masking,
        api.url,
        member.key,
        {"init_image": init, "mask_image": mask_path},
        {"mask_source": "MASK_IMAGE_WHITE"},
        tmp_path,
    )

    assert decoded(artifacts[0]).size == (64, 64)
    assert (artifacts[0]["seed"], artifacts[0]["finishReason"]) == (11, "SUCCESS")
    job = await only_job(api, member)
    assert (job.spec.mode, job.spec.strength) == (Mode.INPAINT, 1.0)
    assert mask_levels(api, job) == (255, 0)


async def test_black_masks_and_init_image_alpha_become_the_engines_white_mask(
    api: RunningApi,
) -> None:
    """Through the job API (then cancelled): what matters is the mask the engine gets."""
    member = await api.member()
    black_square = Image.eval(square_mask(), lambda v: 255 - v)
    cut_out = Image.new("RGBA", (64, 64), (0, 128, 0, 255))
    cut_out.paste((0, 0, 0, 0), (16, 16, 48, 48))  # a transparent middle
    cases = [
        ({"init_image": png(64, 64), "mask_image": encoded(black_square)}, "MASK_IMAGE_BLACK"),
        ({"init_image": encoded(cut_out)}, "INIT_IMAGE_ALPHA"),
    ]
    for files, source in cases:
        response = await api.call(
            "POST",
            "/v1/jobs",
            headers=member.headers,
            files={name: (f"{name}.png", data) for name, data in files.items()},
            data={"text_prompts[0][text]": "a galaxy", "mask_source": source, "steps": 3},
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        await api.call("DELETE", f"/v1/jobs/{job_id}", headers=member.headers)
        job = await api.service.store.get(job_id)
        assert job.spec.mode is Mode.INPAINT, source
        assert mask_levels(api, job) == (255, 0), source


async def test_masking_refuses_a_missing_mask_naming_the_field(api: RunningApi) -> None:
    member = await api.member()
    response = await api.call(
        "POST",
        "/v1/generation/tiny/image-to-image/masking",
        headers=member.headers,
        files={"init_image": ("init.png", png(64, 64))},
        data={"text_prompts[0][text]": "a hole", "mask_source": "MASK_IMAGE_WHITE"},
    )
    assert response.status_code == 400
    error = error_of(response)
    assert error["name"] == "invalid_mask_image" and error["message"].startswith("mask_image:")
    opaque = await api.call(
        "POST",
        "/v1/generation/tiny/image-to-image/masking",
        headers=member.headers,
        files={"init_image": ("init.png", png(64, 64))},
        data={"text_prompts[0][text]": "a hole", "mask_source": "INIT_IMAGE_ALPHA"},
    )
    assert opaque.status_code == 400 and error_of(opaque)["message"].startswith("init_image:")
    assert await api.count(Job, Job.user_id == member.user_id) == 0


async def test_accept_image_png_returns_the_bytes_with_seed_and_finish_reason(
    api: RunningApi,
) -> None:
    member = await api.member()
    body = {"text_prompts": [{"text": "a kettle"}], "steps": 3, "seed": 5}
    response = await api.call(
        "POST",
        "/v1/generation/tiny/text-to-image",
        json=body,
        headers={"Accept": "image/png", "Authorization": member.key},  # Stability's plain form
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "image/png"
    assert (response.headers["Finish-Reason"], response.headers["Seed"]) == ("SUCCESS", "5")
    with Image.open(io.BytesIO(response.content)) as image:
        assert image.size == (64, 64)  # the model's own size when none is asked
    several = await api.call(
        "POST",
        "/v1/generation/tiny/text-to-image",
        json={**body, "samples": 2},
        headers={"Accept": "image/png", **member.headers},
    )
    assert several.status_code == 400 and error_of(several)["name"] == "invalid_samples"


async def test_errors_have_stabilitys_shape_and_status(api: RunningApi) -> None:
    member = await api.member()
    body = {"text_prompts": [{"text": "a kettle"}], "steps": 3}
    path = "/v1/generation/tiny/text-to-image"

    missing = await api.call("POST", path, json=body)
    assert missing.status_code == 401 and error_of(missing)["name"] == "unauthorized"
    wrong = await api.call("POST", path, json=body, headers={"Authorization": "Bearer atl_x_y"})
    assert wrong.status_code == 401
    unknown = await api.call(
        "POST", "/v1/generation/sdxl-9/text-to-image", json=body, headers=member.headers
    )
    assert unknown.status_code == 404 and "sdxl-9" in error_of(unknown)["message"]
    for field, value, name in (
        ("width", 100, "invalid_height_or_width"),
        ("height", 4096, "bad_request"),
        ("samples", 9, "bad_request"),
        ("sampler", "K_NOPE", "bad_request"),
        ("colour", "red", "bad_request"),
    ):
        bad = await api.call("POST", path, json={**body, field: value}, headers=member.headers)
        assert bad.status_code == 400, field
        error = error_of(bad)
        assert (error["name"], error["message"].split(":")[0]) == (name, field)
    too_many = await api.call(
        "POST", path, json={**body, "width": 256, "height": 256}, headers=member.headers
    )
    assert too_many.status_code == 400 and error_of(too_many)["name"] == "invalid_pixel_count"
    text = await api.call(
        "POST",
        "/v1/generation/tiny/image-to-image",
        headers=member.headers,
        files={"init_image": ("dog.png", b"not a picture at all")},
        data={"text_prompts[0][text]": "a dog"},
    )
    assert text.status_code == 400 and error_of(text)["name"] == "invalid_mime_type"
    assert text.json()["message"].startswith("init_image: The `init_image` is not an image")
    huge = await api.call(
        "POST",
        "/v1/generation/tiny/image-to-image",
        headers=member.headers,
        files={"init_image": ("big.png", os.urandom(3 * 2**20))},
        data={"text_prompts[0][text]": "a dog"},
    )
    assert huge.status_code == 413 and error_of(huge)["name"] == "payload_too_large"
    assert await api.count(Job, Job.user_id == member.user_id) == 0
    refused = await api.rows(
        AuditEntry, AuditEntry.action == "http.refused", AuditEntry.actor_id == member.user_id
    )
    assert {entry.params["name"] for entry in refused} == {
        "not_found",
        "invalid_height_or_width",
        "bad_request",
        "invalid_pixel_count",
        "invalid_mime_type",
        "payload_too_large",
    }
    assert {entry.params["key_id"] for entry in refused} == {member.key_id}


async def test_a_banned_member_is_refused_with_403(api: RunningApi) -> None:
    member = await api.member()
    await api.users.ban(member.user_id, "spam", Actor(1, GUILD_ID))
    response = await api.call("GET", "/v1/user/balance", headers=member.headers)
    assert response.status_code == 403 and "spam" in error_of(response)["message"]
    refused = await api.rows(
        AuditEntry, AuditEntry.action == "http.refused", AuditEntry.actor_id == member.user_id
    )
    assert refused[0].params["key_id"] == member.key_id


async def test_a_members_quota_is_shared_by_http_and_discord(api: RunningApi) -> None:
    member = await api.member()
    await api.quotas.set_policy(
        QuotaScope.USER, member.user_id, Limits(images_per_day=3), Actor(1, GUILD_ID)
    )
    body = {"text_prompts": [{"text": "a red fox"}], "steps": 3}
    path = "/v1/generation/tiny/text-to-image"
    first = await api.call("POST", path, json={**body, "samples": 2}, headers=member.headers)
    assert first.status_code == 200, first.text
    # The same member's /imagine, through the job service's own door: the third image.
    spec = build_spec(Options(prompt="a blue fox", steps=3), api.config.models, "tiny")
    discord_job = await api.service.submit(
        spec, Requester(user_id=member.user_id, user_name="member", guild_id=GUILD_ID)
    )
    await wait_for_state(api, discord_job.job.id, JobState.SUCCEEDED)

    over = await api.call("POST", path, json=body, headers=member.headers)
    assert over.status_code == 429
    assert error_of(over)["name"] == "quota_exceeded"
    assert "0 left today" in over.json()["message"]
    assert 1 <= int(over.headers["Retry-After"]) <= 24 * 3600
    balance = (await api.call("GET", "/v1/user/balance", headers=member.headers)).json()
    assert balance["images_left"] == 0
    ledger = await api.rows(UsageEntry, UsageEntry.user_id == member.user_id)
    assert sum(entry.images for entry in ledger) == 3
    clients = sorted(j.client for j in await api.rows(Job, Job.user_id == member.user_id))
    assert clients == ["discord", "http"]  # the refused request queued nothing


async def test_a_revoked_key_is_refused_at_once(api: RunningApi) -> None:
    member = await api.member()
    assert (await api.call("GET", "/v1/user/account", headers=member.headers)).status_code == 200
    assert await api.keys.revoke(member.key_id, member.user_id, Actor(member.user_id, GUILD_ID))
    refused = await api.call("GET", "/v1/user/account", headers=member.headers)
    assert refused.status_code == 401 and error_of(refused)["name"] == "unauthorized"


async def test_a_blocked_prompt_is_content_filtered_and_audited(api: RunningApi) -> None:
    member = await api.member()
    await api.guilds.block("gore", Actor(1, GUILD_ID))
    body = {"text_prompts": [{"text": "a g 0 r e scene"}], "samples": 2, "seed": 3}
    response = await api.call(
        "POST", "/v1/generation/tiny/text-to-image", json=body, headers=member.headers
    )
    assert response.status_code == 200, response.text
    artifacts = response.json()["artifacts"]
    assert [(a["seed"], a["finishReason"]) for a in artifacts] == [
        (3, "CONTENT_FILTERED"),
        (4, "CONTENT_FILTERED"),
    ]
    assert decoded(artifacts[0]).size == (64, 64)
    job = await only_job(api, member)
    assert job.state is JobState.BLOCKED
    (entry,) = await api.rows(AuditEntry, AuditEntry.target == job.id)
    assert (entry.action, entry.outcome, entry.actor_id) == (
        "job.blocked",
        "blocked",
        member.user_id,
    )
    assert entry.params["client"] == "http" and entry.params["key_id"] == member.key_id
    assert "gore" in entry.params["reason"]
    assert await api.count(UsageEntry, UsageEntry.user_id == member.user_id) == 0
    assert await api.count(Reservation, Reservation.user_id == member.user_id) == 0


async def test_a_key_made_in_a_dm_meets_the_global_blocklist_not_a_servers(
    api: RunningApi,
) -> None:
    """A key keeps the server it was made in; one made in a DM has none (README)."""
    in_server = await api.member()
    dm_user = 90_001  # a member of its own, outside the ids api.member() hands out
    made = await api.keys.create(dm_user, "dm", "from a DM", None, [], Actor(dm_user))
    in_dm = Member(dm_user, made.key_id, made.secret)
    await api.guilds.block("walrus", Actor(1, GUILD_ID))
    await api.guilds.block("narwhal", Actor(1, GUILD_ID), everywhere=True)

    async def finish_reason(member: Member, text: str) -> str:
        body = {"text_prompts": [{"text": text}], "steps": 2}
        response = await api.call(
            "POST", "/v1/generation/tiny/text-to-image", json=body, headers=member.headers
        )
        assert response.status_code == 200, response.text
        return str(response.json()["artifacts"][0]["finishReason"])

    assert await finish_reason(in_server, "a walrus") == "CONTENT_FILTERED"
    assert await finish_reason(in_dm, "a walrus") == "SUCCESS"
    assert await finish_reason(in_dm, "a narwhal") == "CONTENT_FILTERED"


async def test_repeated_blocked_prompts_pause_the_keys_member(api: RunningApi) -> None:
    """The strikes Discord counts count over HTTP too, and a pause refuses the key."""
    member = await api.member()
    await api.guilds.block("gore", Actor(1, GUILD_ID))
    body = {"text_prompts": [{"text": "g0re"}]}
    for _ in range(3):  # [moderation] strikes, by default
        response = await api.call(
            "POST", "/v1/generation/tiny/text-to-image", json=body, headers=member.headers
        )
        assert response.json()["artifacts"][0]["finishReason"] == "CONTENT_FILTERED"
    assert await api.users.cooldown_until(member.user_id) is not None
    refused = await api.call("GET", "/v1/user/account", headers=member.headers)
    assert refused.status_code == 403
    error = error_of(refused)
    assert error["name"] == "permission_denied" and "paused until" in error["message"]
    assert int(refused.headers["Retry-After"]) > 0
    strikes = await api.rows(
        AuditEntry, AuditEntry.action == "moderation.blocked", AuditEntry.actor_id == member.user_id
    )
    assert [entry.params["command"] for entry in strikes] == ["http"] * 3


async def test_a_synchronous_request_whose_client_disconnects_is_cancelled_and_charged_what_it_used(
    api: RunningApi,
) -> None:
    """A client that leaves cancels its job as a member's cancel does: once it started, the
    GPU time it used is charged (no images), the rest of the reservation released."""
    member = await api.member()
    body = {"text_prompts": [{"text": "a very slow fox"}], "steps": 150, "samples": 4}
    with pytest.raises(requests.exceptions.ReadTimeout):
        await api.call(
            "POST",
            "/v1/generation/tiny/text-to-image",
            json=body,
            headers=member.headers,
            timeout=(5, 1.0),
        )
    (job,) = await api.rows(Job, Job.user_id == member.user_id)
    job = await wait_for_state(api, job.id, JobState.CANCELLED, JobState.SUCCEEDED)
    assert job.state is JobState.CANCELLED
    assert await api.count(Reservation, Reservation.job_id == job.id) == 0
    ledger = await api.rows(UsageEntry, UsageEntry.job_id == job.id)
    trail = [e.action for e in await api.rows(AuditEntry, AuditEntry.target == job.id)]
    assert "job.cancelled" in trail
    if job.gpu_seconds:  # it had started when the client left
        assert [(e.images, e.gpu_seconds) for e in ledger] == [(0, job.gpu_seconds)]
        assert "quota.settle" in trail and "quota.refund" not in trail
    else:
        assert ledger == [] and "quota.refund" in trail


async def test_an_unexpected_error_is_a_500_with_an_id_the_admin_finds_in_the_log(
    api: RunningApi, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    member = await api.member()

    async def broken(user_id: int) -> dict[str, object]:
        raise RuntimeError("the defaults table caught fire")

    monkeypatch.setattr(api.users.__class__, "defaults", lambda self, user_id: broken(user_id))
    response = await api.call(
        "POST", "/v1/jobs", json={"text_prompts": [{"text": "a fox"}]}, headers=member.headers
    )
    assert response.status_code == 500
    error = error_of(response)
    assert error["name"] == "server_error" and error["id"] in error["message"]
    logged = [r for r in caplog.records if error["id"] in r.getMessage()]
    assert logged and logged[0].exc_info is not None  # the traceback is in the log
    assert "caught fire" not in error["message"]  # ... and not in the answer


async def test_a_stop_cuts_off_waiting_requests_and_refunds_their_jobs(api: RunningApi) -> None:
    """A second server on the same job service, stopped while a request waits on it."""
    second = build_http(
        api.config,
        api.sessions,
        api.service,
        api.quotas,
        api.keys,
        build_moderation(api.config, api.sessions),
        api.core,
    )
    await second.start()
    member = await api.member()
    body = {"text_prompts": [{"text": "a fox that takes its time"}], "steps": 150, "samples": 4}
    waiting = asyncio.create_task(
        asyncio.to_thread(
            requests.post,
            f"{second.url}/v1/generation/tiny/text-to-image",
            json=body,
            headers=member.headers,
            timeout=120,
        )
    )
    async with asyncio.timeout(60):
        while True:  # until the request's job is queued
            if await api.rows(Job, Job.user_id == member.user_id):
                break
            await asyncio.sleep(0.05)
    await second.stop()  # [queue] stop_grace_seconds = 1 in these tests

    with pytest.raises(requests.ConnectionError):
        await waiting
    job = await only_job(api, member)
    job = await wait_for_state(api, job.id, JobState.CANCELLED, JobState.SUCCEEDED)
    assert job.state is JobState.CANCELLED and job.synchronous
    assert await api.count(Reservation, Reservation.job_id == job.id) == 0
    assert await api.count(UsageEntry, UsageEntry.job_id == job.id) == 0
