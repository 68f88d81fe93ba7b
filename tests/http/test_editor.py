"""The Vary (Region) editor's pages over HTTP, without Discord or an engine: the image it
shows and the mask it sends go through the blob store (an S3 bucket here), the lasso
paints its polygon in a real Chromium, a failing request's log line holds no link, and
the API served without Discord (`atelier serve`) serves no editor."""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bot.app import build_http, build_moderation
from bot.core import Core
from bot.core.editor import EDITOR_PATH, UNSIGNED_AUDIT_BURST
from bot.core.refusals import RefusalKind
from bot.core.views import Job
from bot.jobs.spec import JobSpec
from bot.store.commands import CommandStore
from bot.store.editor_links import IssuedLink, LinkStore
from bot.store.jobs import Requester
from bot.store.models import AuditEntry, JobState
from tests.browser import chromium, drag
from tests.buckets import Bucket
from tests.databases import Database
from tests.stores import output, spec

from .conftest import GUILD_ID, RunningApi, open_api

PUBLIC = "https://atelier.example.org"
MEMBER = Requester.on_discord(
    user_id=6001, user_name="painter", guild_id=GUILD_ID, channel_id=77, role_ids=()
)
SIZE = 64  # the tiny model's images


class RecordedReplies:
    """Where the editor's jobs are answered (Discord's replies under the result): the
    jobs asked for, and no message."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int]] = []

    def to(self, job: Job, member_id: int) -> RecordedReplies:
        self.asked.append((job.id, member_id))
        return self

    async def placeholders(self, count: int) -> list[int | None]:
        return [None] * count

    async def discard(self, message_ids: list[int | None]) -> None:
        return None


@dataclass
class Editor:
    api: RunningApi
    replies: RecordedReplies
    bucket: Bucket

    async def link(self, job_id: str) -> str:
        """A member's finished job `job_id` with one image in the store; the path of a
        new editor link to it."""
        api = self.api
        await api.quotas.admit(job_id, MEMBER, spec(width=SIZE, height=SIZE), "tiny", [0])
        store = api.service.store
        await store.transition(job_id, JobState.QUEUED, JobState.RUNNING, device="cpu")
        await store.succeed(job_id, 1.0, [output(job_id, 0)])
        await api.service.blobs.put(output(job_id, 0).path, picture())
        link = await api.core.editor.issue(MEMBER, job_id, 1)
        return link.removeprefix(PUBLIC)

    async def queued_spec(self, job_id: str) -> JobSpec:
        return (await self.api.service.store.get(job_id)).spec


def picture() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (SIZE, SIZE), "teal").save(out, format="PNG")
    return out.getvalue()


def square() -> str:
    """A mask repainting a square of the image, as the editor's page sends it."""
    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).rectangle((8, 8, 23, 23), fill=255)
    return "data:image/png;base64," + base64.b64encode(png_of(mask)).decode()


def png_of(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
async def editor(tmp_path: Path, database: Database, bucket: Bucket) -> AsyncIterator[Editor]:
    """The API as `atelier run` serves it (the core answers the editor in Discord), its
    blobs in an S3 bucket; no engine runs, so what the editor queues stays queued."""
    with database.fresh() as section:
        running, engine = await open_api(
            tmp_path, tmp_path, section + bucket.toml(), http=f'public_url = "{PUBLIC}"'
        )
        replies = RecordedReplies()
        config, sessions = running.config, running.sessions
        moderation = build_moderation(config, sessions)
        running.core = Core.build(
            config=config,
            jobs=running.service,
            users=running.users,
            moderation=moderation,
            commands=CommandStore(sessions),
            quotas=running.quotas,
            links=LinkStore(sessions),
            replies=replies,
        )
        running.http = build_http(
            config,
            sessions,
            running.service,
            running.quotas,
            running.keys,
            moderation,
            running.core,
        )
        try:
            await running.http.start()
            running.url = running.http.url
            yield Editor(running, replies, bucket)
        finally:
            await running.http.stop()
            await engine.dispose()


async def test_the_editor_reads_its_image_from_and_saves_its_mask_to_the_blob_store(
    editor: Editor,
) -> None:
    path = await editor.link("s3job00001")
    data_dir = editor.api.config.storage.data_dir
    assert not (data_dir / output("s3job00001", 0).path).exists()  # only in the bucket

    shown = await editor.api.call("GET", path + "/image")
    assert shown.status_code == 200 and shown.content == picture()

    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).rectangle((8, 8, 23, 23), fill=255)
    sent = await editor.api.call(
        "POST",
        path,
        json={
            "prompt": "a red door",
            "mask": "data:image/png;base64," + base64.b64encode(png_of(mask)).decode(),
        },
    )
    assert sent.status_code == 202, sent.text
    job_id = sent.json()["job_id"]
    queued = await editor.queued_spec(job_id)
    assert queued.mask_image is not None and queued.prompt == "a red door"
    # Published to the bucket before the job was queued; nothing left in the spool.
    stored_keys = editor.bucket.keys()
    assert queued.mask_image in stored_keys
    assert not (data_dir / queued.mask_image).exists()
    stored = await editor.api.service.blobs.read(queued.mask_image)
    assert stored is not None
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(stored))), np.asarray(mask))
    assert editor.replies.asked == [("s3job00001", MEMBER.user_id)]


async def test_a_failing_editor_request_logs_no_link(
    editor: Editor, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = await editor.link("logjob0001")
    token = path.removeprefix(EDITOR_PATH)
    nonce, signature = token.split(".")[4:]

    async def broken(key: str) -> bytes | None:
        raise OSError("the store is down")

    monkeypatch.setattr(editor.api.service.blobs, "read", broken)
    job, _, rest = token.partition(".1.")
    changed = f"{EDITOR_PATH}{job}.2.{rest}"  # another image: its signature fails
    with caplog.at_level(logging.INFO):
        failed = await editor.api.call("GET", path + "/image")  # an unexpected error
        unrouted = await editor.api.call("GET", path + "/nothing")  # no such route
        tampered = await editor.api.call("GET", changed + "/job")  # refused
    assert (failed.status_code, unrouted.status_code, tampered.status_code) == (500, 404, 403)
    assert nonce not in unrouted.text

    server = [record for record in caplog.records if record.name == "bot.http.server"]
    access = [record for record in caplog.records if record.name == "aiohttp.access"]
    assert (len(server), len(access)) == (3, 3)
    lines = server + access
    logged = "\n".join(caplog.text.splitlines() + [r.getMessage() for r in lines])
    assert nonce not in logged and signature not in logged
    assert all(f"{EDITOR_PATH}[redacted]" in record.getMessage() for record in lines)


@pytest.mark.parametrize("public_url", ["", f'public_url = "{PUBLIC}"'])
async def test_the_api_served_without_discord_serves_no_editor(
    tmp_path: Path, public_url: str
) -> None:
    # `atelier serve`: the core has no Discord to answer a region edit in.
    running, engine = await open_api(tmp_path, tmp_path, http=public_url)
    try:
        await running.http.start()
        assert not running.core.editor.served  # so no button would offer a link to it
        running.url = running.http.url
        missing = await running.call("GET", "/edit/x.1.2.3.n.s")
    finally:
        await running.http.stop()
        await engine.dispose()
    assert missing.status_code == 404


def inside(corners: list[tuple[float, float]], margin: float) -> np.ndarray:
    """Which pixels' centres lie at least `margin` inside the convex polygon `corners`
    (clockwise on the screen; a negative margin: within -margin outside it)."""
    ys, xs = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    found = np.ones((SIZE, SIZE), dtype=bool)
    for (x0, y0), (x1, y1) in zip(corners, [*corners[1:], corners[0]], strict=True):
        # The distance from the edge, inward positive (y points down on a screen).
        found &= ((x1 - x0) * (ys - y0) - (y1 - y0) * (xs - x0)) / np.hypot(
            x1 - x0, y1 - y0
        ) >= margin
    return found


async def test_the_lasso_repaints_the_polygon_it_draws(editor: Editor) -> None:
    playwright = pytest.importorskip("playwright.async_api")
    path = await editor.link("lassojob01")
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 800, "height": 1000})  # type: ignore[attr-defined]
        await page.goto(editor.api.url + path)
        await playwright.expect(page.locator("#submit")).to_be_enabled(timeout=15000)
        box = await page.locator("#overlay").bounding_box()
        assert box is not None
        scale = box["width"] / SIZE
        # A triangle, drawn point by point and closed by letting go.
        corners = [(10.0, 8.0), (54.0, 20.0), (22.0, 56.0)]
        await page.click("#tool-lasso")
        await drag(page, box, scale, [*corners, corners[0]])
        await page.click("#submit")
        await playwright.expect(page.locator("#status")).to_contain_text(
            "Queued as job", timeout=15000
        )
        status = await page.text_content("#status")
    assert status is not None
    job_id = status.split("job ", 1)[1].split(":")[0]
    key = (await editor.queued_spec(job_id)).mask_image
    assert key is not None
    stored = await editor.api.service.blobs.read(key)
    assert stored is not None
    mask = np.asarray(Image.open(io.BytesIO(stored)).convert("L"), dtype=float)
    assert mask.shape == (SIZE, SIZE)
    # White inside the polygon, black outside it, but within 1.5 pixels of its edges.
    within = inside(corners, 1.5)
    assert within.sum() > 500 and (mask[within] >= 200).all()
    assert (mask[~inside(corners, -1.5)] <= 55).all()


async def test_a_mask_the_editor_cannot_use_is_refused_audited_and_the_link_still_works(
    editor: Editor,
) -> None:
    path = await editor.link("badmask001")
    black = (
        "data:image/png;base64," + base64.b64encode(png_of(Image.new("L", (SIZE, SIZE)))).decode()
    )
    for body in ({"prompt": "a red door", "mask": black}, {"prompt": "a red door"}):
        refused = await editor.api.call("POST", path, json=body)
        assert refused.status_code == 400, refused.text
    # Each refusal is the link's member's, in the audit as any refused submission is.
    entries = await editor.api.rows(AuditEntry, AuditEntry.action == "editor.vary_region.refused")
    assert [(entry.actor_id, entry.outcome) for entry in entries] == [
        (MEMBER.user_id, "refused")
    ] * 2
    assert all(entry.params["kind"] == RefusalKind.BAD_INPUT for entry in entries)
    # Nothing was queued and the link was not used up: a good mask goes through.
    sent = await editor.api.call("POST", path, json={"prompt": "a red door", "mask": square()})
    assert sent.status_code == 202, sent.text


async def test_a_flood_of_changed_links_is_refused_each_time_within_a_bound_of_audit_writes(
    editor: Editor,
) -> None:
    path = await editor.link("flood00001")
    job, _, rest = path.partition(".1.")
    changed = f"{job}.2.{rest}"  # another image: its signature fails
    answers = [
        await editor.api.call("GET", page)
        for page in [changed] * (UNSIGNED_AUDIT_BURST + 10) + [EDITOR_PATH + "not-a-link"] * 5
    ]
    # Each sender still reads why the link does not open.
    assert {answer.status_code for answer in answers} == {403}
    # A flood of links no one signed writes at most the bound's audit rows...
    refused = AuditEntry.action == "editor.link.refused"
    entries = await editor.api.rows(AuditEntry, refused)
    assert len(entries) == UNSIGNED_AUDIT_BURST
    assert {entry.actor_id for entry in entries} == {None}
    # ...while a refusal of a link this bot signed names its member and is always audited.
    sent = await editor.api.call("POST", path, json={"prompt": "a red door", "mask": square()})
    assert sent.status_code == 202, sent.text
    assert (await editor.api.call("GET", path)).status_code == 410
    entries = await editor.api.rows(AuditEntry, refused)
    assert [(e.actor_id, e.outcome) for e in entries[UNSIGNED_AUDIT_BURST:]] == [
        (MEMBER.user_id, "used")
    ]


async def test_a_submission_checks_its_link_once(
    editor: Editor, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = await editor.link("once000001")
    looked_up: list[str] = []
    get = LinkStore.get

    async def counted(links: LinkStore, nonce: str) -> IssuedLink | None:
        looked_up.append(nonce)
        return await get(links, nonce)

    monkeypatch.setattr(LinkStore, "get", counted)
    sent = await editor.api.call("POST", path, json={"prompt": "a red door", "mask": square()})
    assert sent.status_code == 202, sent.text
    assert looked_up == [path.split(".")[4]]
