"""Style references (--sref, the `sref` attachment) and /blend end to end: Discord, the
bot, the engine with the tiny IP-Adapter of the tiny model set."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from PIL import Image, ImageChops

from bot.jobs.spec import reference_scale
from tests.discord_server import Message

from .conftest import RunningBot
from .test_imagine import finished
from .test_modes import job_id_of, png


def spec_of(bot: RunningBot, job_id: str) -> dict[str, Any]:
    (row,) = bot.rows("select spec, state from jobs where id = :id", id=job_id)
    assert row["state"] == "succeeded", row
    spec = row["spec"]
    found: dict[str, Any] = json.loads(spec) if isinstance(spec, str) else dict(spec)  # type: ignore[call-overload]
    return found


def image_of(message: Message) -> Image.Image:
    return Image.open(io.BytesIO(message.attachments[0].data)).convert("RGB")


async def answered(
    bot: RunningBot, command: str, options: dict[str, object], **attachments: bytes
) -> tuple[str, Message]:
    """The job a command queued, and its result."""
    ix = await bot.server.send_slash_command(
        command,
        options,
        attachments={
            role: (f"{role}.png", data, "image/png") for role, data in attachments.items()
        },
    )
    assert (await ix.wait_for_callback(timeout=3)).type == 5
    job_id = job_id_of(await ix.wait_for_original(lambda m: "queued" in m.content, timeout=30))
    result = await ix.wait_for_original(finished, timeout=120)
    assert result.embeds, result.content
    return job_id, result


async def test_a_style_reference_steers_the_image_and_a_blend_mixes_images(
    running_bot: RunningBot,
) -> None:
    bot = running_bot
    plain_id, plain = await answered(bot, "imagine", {"prompt": "a house", "seed": 5})

    # The `sref` attachment: same prompt and seed, another image, weighed by --sw.
    styled_id, styled = await answered(
        bot, "imagine", {"prompt": "a house --sw 400", "seed": 5}, sref=png((96, 96), "blue")
    )
    spec = spec_of(bot, styled_id)
    (reference,) = spec["references"]
    assert spec["reference_mode"] == "style" and spec["reference_scale"] == reference_scale(400)
    assert str(reference).startswith("inputs/") and (bot.data_dir / str(reference)).is_file()
    assert ImageChops.difference(image_of(plain), image_of(styled)).getbbox() is not None

    # A job id as the reference: the first result's image is copied as an input.
    by_id, _ = await answered(bot, "imagine", {"prompt": f"a house --sref {plain_id}/1", "seed": 5})
    (copied,) = spec_of(bot, by_id)["references"]
    assert str(copied).startswith("inputs/")
    assert (bot.data_dir / str(copied)).read_bytes() == plain.attachments[0].data

    # The link of the first result's image on Discord (atelier-<job>-1.png), as a member
    # copies it from the message: that image, copied byte for byte.
    link = plain.attachments[0].url
    assert link.startswith("http") and link.endswith(f"atelier-{plain_id}-1.png"), link
    # (Another seed: the same one would be answered from the cache, with no run.)
    by_link, _ = await answered(bot, "imagine", {"prompt": f"a house --sref {link}", "seed": 6})
    (linked,) = spec_of(bot, by_link)["references"]
    assert str(linked).startswith("inputs/") and linked != copied
    assert (bot.data_dir / str(linked)).read_bytes() == plain.attachments[0].data

    # /blend of two attachments, no prompt: one blend-mode job, journaled as `blend`.
    blend_id, blended = await answered(
        bot, "blend", {"seed": 9}, image1=png((64, 64), "red"), image2=png((64, 64), "green")
    )
    spec = spec_of(bot, blend_id)
    assert spec["reference_mode"] == "blend" and len(spec["references"]) == 2
    assert image_of(blended).size == (64, 64)
    (journaled,) = bot.rows(
        "select c.command from received_commands c join jobs j"
        " on j.interaction_id = c.interaction_id where j.id = :id",
        id=blend_id,
    )
    assert journaled["command"] == "blend"


@pytest.mark.parametrize("command", ["imagine", "blend"])
async def test_an_unknown_reference_is_refused_privately_and_audited_under_its_command(
    running_bot: RunningBot, command: str
) -> None:
    images = {f"image{n}": ("image.png", png((64, 64), "red"), "image/png") for n in (1, 2)}
    ix = await running_bot.server.send_slash_command(
        command,
        {"prompt": "a house --sref 0123456789"},
        attachments=images if command == "blend" else {},
    )
    answer = await ix.wait_for_callback(timeout=3)
    assert answer.type == 4 and answer.data is not None and answer.data["flags"] & 64  # private
    assert "I know no result `0123456789`" in answer.data["content"]
    refused = await running_bot.wait_for_rows(
        "select action from audit_log where outcome = 'refused'"
    )
    assert [row["action"] for row in refused] == [f"{command}.refused"]
