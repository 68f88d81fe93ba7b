"""Generation modes end to end: attachments, V/U buttons (across a restart), Cancel, previews."""

from __future__ import annotations

import io
import json

from PIL import Image, ImageChops

from bot.jobs.spec import fit_ratio
from engine.inputs import seam_blur
from tests.discord_server import Message

from .conftest import Launch, RunningBot
from .test_imagine import finished


def png(size: tuple[int, int], colour: str = "red", mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def sizes(message: Message) -> list[tuple[int, int]]:
    return [Image.open(io.BytesIO(a.data)).size for a in message.attachments]


def job_id_of(message: Message) -> str:
    return message.content.split("`")[1]


async def test_image_to_image_then_variation_and_upscale_buttons_work_after_a_restart(
    running_bot: RunningBot,
) -> None:
    server = running_bot.server
    ix = await server.send_slash_command(
        "imagine",
        {"prompt": "a red square", "seed": 3, "strength": 0.5},
        attachments={"image": ("photo.png", png((128, 64)), "image/png")},
    )
    assert (await ix.wait_for_callback(timeout=3)).type == 5
    job_id = job_id_of(await ix.wait_for_original(lambda m: "queued" in m.content, timeout=30))
    result = await ix.wait_for_original(finished, timeout=120)
    shape = fit_ratio(128 / 64, 64 * 64)  # the photo's shape at the model's area
    assert sizes(result) == [shape]
    assert {f"atelier:v:{job_id}:1", f"atelier:u:{job_id}:1"} <= set(result.custom_ids)
    (row,) = running_bot.rows("select spec from jobs where id = :id", id=job_id)
    assert '"mode": "img2img"' in str(row["spec"]) and '"strength": 0.5' in str(row["spec"])

    # The buttons read the stored output, so they outlive the process that made them.
    await running_bot.restart()
    variation = await server.click_button(result, f"atelier:v:{job_id}:1")
    assert (await variation.wait_for_callback(timeout=3)).type == 5
    varied = await variation.wait_for_original(finished, timeout=120)
    assert sizes(varied) == [shape]
    seed_field = next(f for f in varied.embeds[0]["fields"] if f["name"] == "Seed")
    assert seed_field["value"] != "#1: 3"  # a variation is a new roll

    upscale = await server.click_button(result, f"atelier:u:{job_id}:1")
    upscaled = await upscale.wait_for_original(finished, timeout=120)
    assert sizes(upscaled) == [(shape[0] * 2, shape[1] * 2)]
    up_id = job_id_of(await upscale.wait_for_original(lambda m: "queued" in m.content))
    (row,) = running_bot.rows(
        "select j.spec, o.recipe from jobs j join outputs o on o.job_id = j.id where j.id = :id",
        id=up_id,
    )
    assert '"mode": "upscale"' in str(row["spec"]) and f'"source_job": "{job_id}"' in str(
        row["spec"]
    )
    assert '"upscale"' in str(row["recipe"])  # the recipe names its mode


async def test_cancel_stops_a_queued_and_a_running_job_and_previews_show_meanwhile(
    running_bot: RunningBot,
) -> None:
    server = running_bot.server
    long = await server.send_slash_command("imagine", {"prompt": "slow", "steps": 150})
    await long.wait_for_original(lambda m: "queued" in m.content, timeout=30)
    waiting = await server.send_slash_command("imagine", {"prompt": "next", "steps": 150})
    queued = await waiting.wait_for_original(lambda m: "queued" in m.content, timeout=30)
    waiting_id = job_id_of(queued)

    cancel = await server.click_button(queued, f"atelier:cancel:{waiting_id}")
    assert (await cancel.wait_for_callback(timeout=3)).type == 5  # answered once it ended
    assert "is cancelled" in (await cancel.wait_for_followup(timeout=10)).content
    assert "was cancelled" in (await waiting.wait_for_original(finished_or_cancelled)).content

    preview = await long.wait_for_original(
        lambda m: any(a.filename == "preview.png" for a in m.attachments), timeout=120
    )
    assert "step" in preview.content
    long_id = job_id_of(preview)
    stopper = await server.click_button(preview, f"atelier:cancel:{long_id}")
    await stopper.wait_for_callback(timeout=3)
    stopped = await long.wait_for_original(finished_or_cancelled, timeout=60)
    assert "was cancelled" in stopped.content and not stopped.attachments
    assert stopped.custom_ids == []  # no Cancel button left on a finished job

    states = running_bot.rows(
        "select id, state from jobs where id in (:a, :b)", a=long_id, b=waiting_id
    )
    assert {(r["id"], r["state"]) for r in states} == {
        (long_id, "cancelled"),
        (waiting_id, "cancelled"),
    }
    audit = await running_bot.wait_for_rows(
        "select actor_id from audit_log where action = 'job.cancelled' and target = :id",
        id=long_id,
    )
    assert audit == [{"actor_id": server.user_id}]


def finished_or_cancelled(message: Message) -> bool:
    return finished(message) or "cancelled" in message.content


async def test_impossible_inputs_are_refused_privately_before_queueing(
    running_bot: RunningBot,
) -> None:
    server = running_bot.server
    cases = [
        ({"mask": ("m.png", png((64, 64), "white"), "image/png")}, {}, "needs the `image`"),
        (
            {"control": ("c.png", png((64, 64)), "image/png")},
            {"control_type": "canny"},
            "Model `tiny` has no `canny` ControlNet configured; no model has one",
        ),
        ({"image": ("notes.txt", b"hello", "text/plain")}, {}, "is not an image"),
        ({"image": ("fake.png", b"not a png at all", "image/png")}, {}, "not an image"),
    ]
    for attachments, options, message in cases:
        ix = await server.send_slash_command(
            "imagine", {"prompt": "x", **options}, attachments=attachments
        )
        callback = await ix.wait_for_callback(timeout=3)
        if callback.type == 4:  # refused before the deferral
            assert callback.data["flags"] & 64, message
            text = callback.data["content"]
        else:  # refused after downloading: privately, and the public "thinking" reply removed
            refusal = await ix.wait_for_followup(lambda m: "⚠️" in m.content, timeout=10)
            assert refusal.ephemeral, message
            text = refusal.content
            assert ix.original is None or ix.original.deleted, message
        assert message in text
    refusals = await running_bot.wait_for_rows(
        "select count(*) as n from audit_log where action = 'imagine.refused' having n = 4"
    )
    assert refusals == [{"n": 4}]
    assert running_bot.rows("select count(*) as n from jobs") == [{"n": 0}]


async def test_inpainting_and_a_controlnet_sketch_from_attachments(running_bot: RunningBot) -> None:
    server = running_bot.server
    sketch = Image.new("RGB", (64, 64), "white")
    sketch.paste((0, 0, 0), (8, 30, 56, 34))
    buffer = io.BytesIO()
    sketch.save(buffer, format="PNG")
    mask = Image.new("RGBA", (32, 32), (0, 0, 0, 0))  # a white square on a transparent layer
    mask.paste((255, 255, 255, 255), (8, 8, 24, 24))
    hole = io.BytesIO()
    mask.save(hole, format="PNG")
    wall = io.BytesIO()  # an animated PNG: its first frame is used, and the member told so
    frames = [Image.new("RGB", (64, 64), colour) for colour in ("grey", "blue")]
    frames[0].save(wall, format="PNG", save_all=True, append_images=frames[1:])
    inpaint = await server.send_slash_command(
        "imagine",
        {"prompt": "a window", "seed": 8},
        attachments={
            "image": ("wall.png", wall.getvalue(), "image/png"),
            "mask": ("hole.png", hole.getvalue(), "image/png"),
        },
    )
    control = await server.send_slash_command(
        "imagine",
        {"prompt": "a bridge", "seed": 9, "control_type": "scribble"},
        attachments={"control": ("sketch.png", buffer.getvalue(), "image/png")},
    )
    notice = await inpaint.wait_for_followup(lambda m: "animated" in m.content, timeout=30)
    assert notice.ephemeral
    assert notice.content == "The `image` attachment is animated; I used its first frame."
    assert not any("animated" in m.content for m in control.followups)
    for ix, mode in ((inpaint, "inpaint"), (control, "controlnet")):
        result = await ix.wait_for_original(finished, timeout=120)
        assert sizes(result) == [(64, 64)], result.content
        (row,) = running_bot.rows(
            "select o.recipe from outputs o join jobs j on o.job_id = j.id where j.id = :id",
            id=job_id_of(await ix.wait_for_original(lambda m: "queued" in m.content)),
        )
        assert f'"mode": "{mode}"' in str(row["recipe"])


async def test_zoom_out_make_square_and_pan_paint_around_the_kept_picture(
    launch_bot: Launch,
) -> None:
    # Eight requests in a row, more than a member's default burst.
    running_bot = await launch_bot(extra="[moderation]\nmember_burst = 0\n")
    server = running_bot.server
    made = await server.send_slash_command(
        "imagine", {"prompt": "a lighthouse", "seed": 4, "aspect": "3:2"}
    )
    result = await made.wait_for_original(finished, timeout=120)
    job_id = job_id_of(await made.wait_for_original(lambda m: "queued" in m.content))
    # Under a single image: five rows of at most five buttons, the outpainting ones included.
    rows = [row["components"] for row in result.components]
    assert len(rows) <= 5 and all(len(row) <= 5 for row in rows)
    keys = ("z2", "z15", "sq", "pl", "pr", "pu", "pd")
    assert {f"atelier:{key}:{job_id}:1" for key in keys} <= set(result.custom_ids)

    zoom = await server.click_button(result, f"atelier:z2:{job_id}:1")
    assert (await zoom.wait_for_callback(timeout=3)).type == 5
    zoomed = await zoom.wait_for_original(finished, timeout=120)
    zoom_id = job_id_of(await zoom.wait_for_original(lambda m: "queued" in m.content))
    (row,) = running_bot.rows("select spec from jobs where id = :id", id=zoom_id)
    spec = json.loads(str(row["spec"]))
    (source_size,) = sizes(result)
    # The 3:2 canvas at the model's area, the picture at half its sides in the middle.
    assert sizes(zoomed) == [fit_ratio(source_size[0] / source_size[1], 64 * 64)]
    frame = spec["frame"]
    assert spec["mode"] == "outpaint" and (spec["source_job"], spec["source_image"]) == (job_id, 1)
    picture = Image.open(io.BytesIO(result.attachments[0].data)).convert("RGB")
    picture = picture.resize((frame["width"], frame["height"]), Image.Resampling.LANCZOS)
    painted = Image.open(io.BytesIO(zoomed.attachments[0].data)).convert("RGB")
    seam = 3 * seam_blur(*painted.size)
    inner = (
        frame["left"] + seam,
        frame["top"] + seam,
        frame["left"] + frame["width"] - seam,
        frame["top"] + frame["height"] - seam,
    )
    kept = picture.crop((seam, seam, frame["width"] - seam, frame["height"] - seam))
    assert ImageChops.difference(painted.crop(inner), kept).getextrema() == ((0, 0),) * 3

    # The zoomed image is a single image too: its own buttons zoom, square and pan again.
    square = await server.click_button(zoomed, f"atelier:sq:{zoom_id}:1")
    squared = await square.wait_for_original(finished, timeout=120)
    square_id = job_id_of(await square.wait_for_original(lambda m: "queued" in m.content))
    assert sizes(squared) == [(64, 64)]
    pan = await server.click_button(squared, f"atelier:pu:{square_id}:1")
    panned = await pan.wait_for_original(finished, timeout=120)
    assert sizes(panned) == [fit_ratio(2 / 3, 64 * 64)]
    # A square image is not made square again: one private sentence, nothing queued.
    again = await server.click_button(squared, f"atelier:sq:{square_id}:1")
    refused = await again.wait_for_callback(timeout=10)
    assert refused.data is not None and refused.data["flags"] & 64
    assert refused.data["content"] == "⚠️ This image is already square."

    # Custom Zoom: a form with the words and the factor; a factor out of range is refused
    # privately, a good one zooms out by it with the new words.
    pan_id = job_id_of(await pan.wait_for_original(lambda m: "queued" in m.content))
    custom = await server.click_button(panned, f"atelier:zc:{pan_id}:1")
    form = await custom.wait_for_callback(timeout=10)
    assert form.type == 9 and form.data is not None and form.data["title"] == "Custom Zoom"
    wrong = await server.submit_modal(custom, {"prompt": "a lighthouse", "zoom": "3"})
    told = await wrong.wait_for_callback(timeout=10)
    assert told.data is not None and told.data["flags"] & 64
    assert told.data["content"] == "⚠️ Custom Zoom needs a factor from 1.05 to 2, e.g. 1.5."
    # Answered, that form is closed (as Discord closes it, and discord.py stops it; a
    # second submission of it raced the stop): the member opens a new one.
    custom = await server.click_button(panned, f"atelier:zc:{pan_id}:1")
    assert (await custom.wait_for_callback(timeout=10)).type == 9
    sent = await server.submit_modal(
        custom, {"prompt": "a lighthouse in a storm", "negative": "", "zoom": "1.5"}
    )
    assert (await sent.wait_for_callback(timeout=3)).type == 5
    await sent.wait_for_original(finished, timeout=120)
    zc_id = job_id_of(await sent.wait_for_original(lambda m: "queued" in m.content))
    (row,) = running_bot.rows("select spec from jobs where id = :id", id=zc_id)
    custom_spec = json.loads(str(row["spec"]))
    assert custom_spec["mode"] == "outpaint" and custom_spec["prompt"] == "a lighthouse in a storm"
    frame = custom_spec["frame"]
    # The picture at two thirds of the canvas's sides.
    assert abs(frame["width"] / custom_spec["width"] - 2 / 3) < 0.03


async def test_recreate_makes_a_job_again_from_its_recipe_bit_for_bit(
    running_bot: RunningBot,
) -> None:
    server = running_bot.server
    made = await server.send_slash_command("imagine", {"prompt": "a quiet harbour", "count": 2})
    await made.wait_for_original(finished, timeout=120)
    job_id = job_id_of(await made.wait_for_original(lambda m: "queued" in m.content))

    again = await server.send_slash_command("recreate", {"job": f"`{job_id}`"})
    assert (await again.wait_for_callback(timeout=3)).type == 5
    await again.wait_for_original(finished, timeout=120)
    new_id = job_id_of(await again.wait_for_original(lambda m: "queued" in m.content))
    pixels: dict[str, list[bytes]] = {}
    for row in running_bot.rows('select job_id, path from outputs order by "index"'):
        with Image.open(running_bot.data_dir / str(row["path"])) as image:
            pixels.setdefault(str(row["job_id"]), []).append(image.tobytes())
    # The same seeds and settings on the same device: the same pixels, bit for bit (the
    # files differ only in the recipe each PNG carries, which names its job).
    assert new_id != job_id and len(pixels[job_id]) == 2
    assert pixels[job_id][0] != pixels[job_id][1]  # two seeds, two pictures
    assert pixels[new_id] == pixels[job_id]

    unknown = await server.send_slash_command("recreate", {"job": "0123456789"})
    told = await unknown.wait_for_callback(timeout=10)
    assert told.data is not None and told.data["flags"] & 64
    assert told.data["content"] == "⚠️ That job is no longer stored."
