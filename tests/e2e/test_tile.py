"""--tile end to end: /imagine's flag reaches the engine, the PNG and the result's embed."""

from __future__ import annotations

import io
import json

from PIL import Image

from .conftest import RunningBot
from .test_imagine import finished


async def test_a_tile_flag_makes_a_tiled_image_and_says_so(running_bot: RunningBot) -> None:
    server = running_bot.server
    ix = await server.send_slash_command(
        "imagine", {"prompt": "old mossy cobblestones --tile", "seed": 5}
    )
    queued = await ix.wait_for_original(lambda m: "queued" in m.content, timeout=10)
    job_id = queued.content.split("`")[1]
    result = await ix.wait_for_original(finished, timeout=120)
    fields = {field["name"]: field["value"] for field in result.embeds[0]["fields"]}
    assert fields["Prompt"] == "old mossy cobblestones"
    assert fields["Tiling"] == "seamless texture (--tile)"
    (png,) = [a for a in result.attachments if a.filename.endswith(".png")]
    with Image.open(io.BytesIO(png.data)) as image:
        assert json.loads(image.text["atelier"])["tile"] is True
        assert image.text["parameters"].endswith(", Tiling: True")
    (row,) = running_bot.rows("select spec from jobs where id = :id", id=job_id)
    stored = row["spec"]
    assert (json.loads(stored) if isinstance(stored, str) else stored)["tile"] is True
