"""Sketches end to end: a reply with a sketch, a mention with one, the two context menus."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tests.discord_server import Message

from .conftest import Launch, RunningBot
from .test_imagine import finished


def sketch(size: tuple[int, int] = (128, 96)) -> bytes:
    """Dark lines on white paper, as drawn on a phone."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.line((8, 80, 120, 10), fill="black", width=3)
    draw.ellipse((30, 20, 90, 70), outline="black", width=3)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def photo(size: tuple[int, int] = (96, 96)) -> bytes:
    """Smooth tones and noise: a photo, not a drawing."""
    ramp = np.linspace(30, 220, size[0])[None, :, None] * np.ones((size[1], 1, 3))
    noisy = ramp + np.random.default_rng(1).normal(0, 15, ramp.shape)
    buffer = io.BytesIO()
    Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def fields(message: Message) -> dict[str, str]:
    return {field["name"]: field["value"] for field in message.embeds[0]["fields"]}


async def bot_reply_to(bot: RunningBot, message: Message) -> Message:
    """The bot's reply to a member's message, once it shows a result (or a refusal)."""
    server = bot.server

    def answered(candidate: Message) -> bool:
        reference = candidate.payload.get("message_reference") or {}
        return (
            candidate.author_id == server.bot_user_id
            and str(reference.get("message_id")) == str(message.id)
            and (finished(candidate) or "⚠️" in candidate.content)
        )

    return await server.wait_for_channel_message(answered, timeout=120)


async def test_a_reply_or_a_mention_with_a_sketch_makes_a_controlnet_image_as_a_reply(
    launch_bot: Launch, tiny_model_set: dict[str, Path]
) -> None:
    # A second model that has a canny ControlNet, for the refusal to name.
    canny = tiny_model_set["controlnet-scribble"]
    edges = (
        f'[models.edges]\nsource = "{tiny_model_set["sd15"]}"\nwidth = 64\nheight = 64\n'
        f'steps = 4\n[models.edges.controlnets]\ncanny = "{canny}"\n'
    )
    bot = await launch_bot(extra=edges)
    server = bot.server
    sketcher = server.add_member(name="sketcher")
    ix = await server.send_slash_command("imagine", {"prompt": "a castle", "seed": 11})
    result = await ix.wait_for_original(finished, timeout=120)

    # A reply to the result with only a sketch: the result's prompt, the sketcher's job.
    drawn = await server.send_member_message(
        user_id=sketcher, reply_to=result, attachments=[("castle.png", sketch(), "image/png")]
    )
    answer = await bot_reply_to(bot, drawn)
    assert fields(answer)["Prompt"] == "a castle"
    assert answer.content.startswith(f"✅ <@{sketcher}>")
    (row,) = bot.rows("select id, user_id, spec from jobs where message_id = :m", m=answer.id)
    spec = json.loads(str(row["spec"]))
    assert (row["user_id"], spec["mode"], spec["control_type"]) == (
        sketcher,
        "controlnet",
        "scribble",
    )
    assert bot.rows("select user_id from usage_ledger where job_id = :j", j=row["id"]) == [
        {"user_id": sketcher}
    ]
    # The first answer was a new reply that pinged only the sketcher.
    first_post, *_ = [
        r.body
        for r in server.requests_matching("POST", r"^/channels/\d+/messages$")
        if isinstance(r.body, dict) and r.body.get("message_reference")
    ]
    assert first_post["allowed_mentions"]["users"] == [sketcher]
    assert first_post["allowed_mentions"]["parse"] == []

    # A message that only mentions the bot, with words and flags.
    mention = await server.send_member_message(
        f"<@{server.bot_user_id}> a tower --seed 5",
        user_id=sketcher,
        attachments=[("tower.png", sketch((96, 128)), "image/png")],
    )
    tower = await bot_reply_to(bot, mention)
    assert fields(tower)["Prompt"] == "a tower" and fields(tower)["Seed"] == "#1: 5"

    # A photo is read as canny, which this model lacks: the answer names one that has it.
    snapshot = await server.send_member_message(
        f"<@{server.bot_user_id}> a street",
        user_id=sketcher,
        attachments=[("street.png", photo(), "image/png")],
    )
    refusal = await bot_reply_to(bot, snapshot)
    assert "Model `tiny` has no `canny` ControlNet configured; models that have one: edges" in (
        refusal.content
    )
    # The words may name the type instead.
    told = await server.send_member_message(
        f"<@{server.bot_user_id}> a street --control scribble",
        user_id=sketcher,
        attachments=[("street.png", photo(), "image/png")],
    )
    assert fields(await bot_reply_to(bot, told))["Prompt"] == "a street"
    # A message that neither mentions nor replies to the bot is not read.
    await server.send_member_message(
        "just a drawing", user_id=sketcher, attachments=[("d.png", sketch(), "image/png")]
    )
    assert len(bot.rows("select id from jobs")) == 4


async def test_both_context_menus_open_a_modal_and_work_on_another_members_post(
    running_bot: RunningBot,
) -> None:
    bot, server = running_bot, running_bot.server
    artist = server.add_member(name="artist")
    posted = await server.send_member_message(
        "my doodle", user_id=artist, attachments=[("doodle.png", sketch(), "image/png")]
    )
    menu = await server.send_message_command("Imagine from sketch", posted)
    modal = await menu.wait_for_callback(timeout=3)
    assert modal.type == 9
    submitted = await server.submit_modal(menu, {"prompt": "a bridge", "control_type": "auto"})
    assert (await submitted.wait_for_callback(timeout=3)).type == 5
    bridge = await submitted.wait_for_original(finished, timeout=120)
    assert fields(bridge)["Prompt"] == "a bridge"
    (row,) = bot.rows("select id, user_id, spec from jobs")
    spec = json.loads(str(row["spec"]))
    assert (row["user_id"], spec["mode"], spec["control_type"]) == (
        server.user_id,
        "controlnet",
        "scribble",
    )

    # From the bot's own result: the modal comes with its prompt; image-to-image.
    again = await server.send_message_command("Imagine from image", bridge, user_id=artist)
    form = await again.wait_for_callback(timeout=3)
    assert form.type == 9 and "a bridge" in json.dumps(form.data)
    dawn = await server.submit_modal(again, {"prompt": "a bridge at dawn", "strength": "0.5"})
    result = await dawn.wait_for_original(finished, timeout=120)
    assert fields(result)["Prompt"] == "a bridge at dawn"
    (row,) = bot.rows("select user_id, spec from jobs where user_id = :u", u=artist)
    spec = json.loads(str(row["spec"]))
    assert (spec["mode"], spec["strength"]) == ("img2img", 0.5)

    # A message without an image is refused privately; a bad strength too.
    words = await server.send_member_message("no picture here", user_id=artist)
    empty = await server.send_message_command("Imagine from image", words)
    answer = await empty.wait_for_callback(timeout=3)
    assert answer.data["flags"] & 64 and "no image attached" in answer.data["content"]
    odd = await server.send_message_command("Imagine from image", posted)
    await odd.wait_for_callback(timeout=3)
    bad = await server.submit_modal(odd, {"prompt": "x", "strength": "3"})
    assert "Strength is a number" in (await bad.wait_for_callback(timeout=3)).data["content"]
