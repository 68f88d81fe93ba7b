"""Vary (Region) end to end: the button's private link, the editor page in a real headless
Chromium (the distribution's, driven by playwright), a region painted with the mouse
and a rectangle, the inpainting job its mask makes, and its result delivered in Discord
as a reply to the original image; where no editor is served, the button's answer."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from bot.discord.cogs.jobs import NO_EDITOR
from tests.browser import chromium, drag
from tests.discord_server import Message

from .conftest import Launch, RunningBot
from .test_apikey import free_port
from .test_imagine import finished

# Where a run also writes the editor's screenshot for the docs (README shows it).
SCREENSHOT_VARIABLE = "ATELIER_EDITOR_SCREENSHOT"
LINK = re.compile(r"\((http://[^)\s]+/edit/[^)\s]+)\)")


@dataclass(frozen=True)
class Stroke:
    """A brush stroke from (x0, y) to (x1, y) and a rectangle, in image pixels."""

    y: float
    x0: float
    x1: float
    width: float
    rect: tuple[float, float, float, float]  # left, top, right, bottom

    def inside(self, x: np.ndarray, y: np.ndarray, margin: float) -> np.ndarray:
        """Pixels whose centre lies at least `margin` inside the painted region (a
        negative margin: within -margin outside it)."""
        along = np.clip(x, self.x0, self.x1)
        in_stroke = np.hypot(x - along, y - self.y) <= self.width / 2 - margin
        left, top, right, bottom = self.rect
        in_rect = (
            (x >= left + margin)
            & (x <= right - margin)
            & (y >= top + margin)
            & (y <= bottom - margin)
        )
        return np.asarray(in_stroke | in_rect)


@pytest.fixture
async def editor_bot(launch_bot: Launch) -> RunningBot:
    port = free_port()
    http = f'[http]\nenabled = true\nport = {port}\npublic_url = "http://127.0.0.1:{port}"\n'
    return await launch_bot(extra=http)


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    async with chromium() as launched:
        yield launched


async def vary_region(bot: RunningBot, result: Message) -> str:
    """Click Vary (Region) under `result`; its private answer."""
    button = next(
        c["custom_id"]
        for c in result.iter_components()
        if str(c.get("custom_id", "")).startswith("atelier:vr:")
    )
    click = await bot.server.click_button(result, button)
    answer = await click.wait_for_callback(timeout=10)
    assert answer.type == 4 and answer.data["flags"] & 64, answer  # private
    content = answer.data["content"]
    assert isinstance(content, str)
    return content


async def editor_link(bot: RunningBot, result: Message) -> str:
    """Click Vary (Region) under `result`; the link in the private answer."""
    answer = await vary_region(bot, result)
    found = LINK.search(answer)
    assert found is not None, answer
    return found.group(1)


async def test_without_the_editor_the_button_says_how_to_inpaint_with_imagine(
    running_bot: RunningBot,
) -> None:
    # No [http] server in this `atelier run`: no page to link to.
    made = await running_bot.server.send_slash_command("imagine", {"prompt": "a lighthouse"})
    result = await made.wait_for_original(finished, timeout=120)
    answer = await vary_region(running_bot, result)
    assert answer == NO_EDITOR and "/edit/" not in answer
    # Audited just after the answer: waited for.
    assert await running_bot.wait_for_rows(
        "select outcome from audit_log where action = 'button.vary_region'"
    ) == [{"outcome": "no editor"}]


async def test_a_region_painted_in_the_browser_is_repainted_and_answered_as_a_reply(
    editor_bot: RunningBot, browser: object, tmp_path: Path
) -> None:
    playwright = pytest.importorskip("playwright.async_api")
    bot, server = editor_bot, editor_bot.server
    made = await server.send_slash_command("imagine", {"prompt": "a lighthouse", "seed": 7})
    result = await made.wait_for_original(finished, timeout=120)
    (source,) = bot.rows("select id, spec from jobs")
    link = await editor_link(bot, result)

    page = await browser.new_page(viewport={"width": 800, "height": 1000})  # type: ignore[attr-defined]
    await page.goto(link)
    await playwright.expect(page.locator("#submit")).to_be_enabled(timeout=15000)
    assert await page.input_value("#prompt") == "a lighthouse"  # the job's prompt, editable
    width, height = await page.evaluate(
        "[document.getElementById('picture').width, document.getElementById('picture').height]"
    )
    box = await page.locator("#overlay").bounding_box()
    assert box is not None
    scale = box["width"] / width
    stroke = Stroke(
        y=height * 0.25,
        x0=width * 0.2,
        x1=width * 0.6,
        width=8,
        rect=(width * 0.55, height * 0.6, width * 0.85, height * 0.9),
    )
    await page.locator("#brush-size").evaluate("(slider, v) => { slider.value = v }", stroke.width)
    # A stray stroke, taken back with Undo: it leaves nothing in the mask.
    await drag(page, box, scale, [(width * 0.1, height * 0.5), (width * 0.3, height * 0.5)])
    await page.click("#undo")
    await drag(page, box, scale, [(stroke.x0, stroke.y), (stroke.x1, stroke.y)])
    await page.click("#tool-rect")
    left, top, right, bottom = stroke.rect
    await drag(page, box, scale, [(left, top), (right, bottom)])
    await page.fill("#prompt", "a lighthouse with a red roof")

    shot = tmp_path / "vary-region.png"
    await page.screenshot(path=str(shot), full_page=True)
    if target := os.environ.get(SCREENSHOT_VARIABLE):
        shutil.copyfile(shot, target)

    await page.click("#submit")
    await playwright.expect(page.locator("#status")).to_contain_text("Queued as job", timeout=15000)
    status = await page.text_content("#status")
    assert status is not None
    job_id = status.split("job ", 1)[1].split(":")[0]

    row = bot.job_row(job_id)
    spec = row["spec"]
    assert isinstance(spec, str)
    assert '"mode":"inpaint"' in spec.replace(" ", "")
    assert f'"source_job":"{source["id"]}"' in spec.replace(" ", "")
    assert "a lighthouse with a red roof" in spec
    mask_path = re.search(r'"mask_image":\s*"([^"]+)"', spec)
    assert mask_path is not None
    mask = np.asarray(Image.open(bot.data_dir / mask_path.group(1)).convert("L"), dtype=float)
    assert mask.shape == (height, width)
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    # White where painted, black elsewhere, within 1.5 pixels of the edges (antialiasing).
    assert (mask[stroke.inside(xs, ys, 1.5)] >= 200).all()
    assert (mask[~stroke.inside(xs, ys, -1.5)] <= 55).all()

    # Delivered in Discord as a reply to the original result.
    def the_reply(message: Message) -> bool:
        reference = message.payload.get("message_reference") or {}
        return str(reference.get("message_id")) == str(result.id) and finished(message)

    reply = await server.wait_for_channel_message(the_reply, timeout=120)
    assert reply.attachments and f"<@{server.user_id}>" in reply.content
    assert bot.job_row(job_id)["state"] == "succeeded"

    # The link worked once: sent again it is refused, and so is the page.
    again = await asyncio.to_thread(
        requests.post, link, json={"prompt": "x", "mask": "AAAA"}, timeout=10
    )
    assert again.status_code == 410 and "used already" in again.json()["message"]
    page_again = await asyncio.to_thread(requests.get, link, timeout=10)
    assert page_again.status_code == 410 and "used already" in page_again.text
    actions = [
        (r["action"], r["outcome"])
        for r in bot.rows("select action, outcome from audit_log where action like 'editor.%'")
    ]
    assert actions[:2] == [("editor.link.issued", "ok"), ("editor.link.used", "ok")]
    assert ("editor.link.refused", "used") in actions
