"""--tile end to end: /imagine's flag reaches the engine, the PNG and the result's embed."""

from __future__ import annotations

import io
import json

from PIL import Image

from .conftest import Launch, RunningBot
from .test_imagine import finished
from .test_lifecycle import imagine, on_the_engine


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
    # The spec as text on both databases (PostgreSQL's driver would decode its json).
    (row,) = running_bot.rows(
        "select cast(spec as text) as spec from jobs where id = :id", id=job_id
    )
    assert json.loads(str(row["spec"]))["tile"] is True


async def test_tiled_and_untiled_jobs_queued_together_run_in_batches_of_their_own(
    launch_bot: Launch,
) -> None:
    bot = await launch_bot(engine="max_batch_images = 4")
    # A slow job holds the engine while the four others queue, so they could share a batch.
    blocker = await imagine(bot, "blocker", seed=1, steps=30)
    await blocker.wait_for_original(on_the_engine, timeout=120)
    queued = [
        await imagine(bot, f"bricks {n}{' --tile' if n % 2 else ''}", seed=10 + n) for n in range(4)
    ]
    for ix in queued:
        await ix.wait_for_original(finished, timeout=240)
    rows = bot.rows(
        "select cast(spec as text) as spec, batch_id from jobs"
        " where cast(spec as text) like '%bricks%'"
    )
    batches: dict[bool, set[str]] = {True: set(), False: set()}
    for row in rows:
        batches[json.loads(str(row["spec"]))["tile"]].add(row["batch_id"])
    assert len(batches[True]) == len(batches[False]) == 1
    assert batches[True] != batches[False]
