"""`[storage] backend = "s3"` end to end, against the tests' local S3 server: a job's
upload and images are kept in the bucket only, the member gets them in Discord from
there, a button reuses an image from there, and /forget-me deletes them there."""

from __future__ import annotations

from pathlib import Path

from tests.buckets import CREDENTIALS, Bucket

from .conftest import Launch
from .test_imagine import finished
from .test_modes import png
from .test_studio import click_and_finish, job_id_of


def local_files(data_dir: Path) -> list[Path]:
    """The images, uploads and staged inputs left in the bot's data folder."""
    return [
        path
        for folder in ("images", "inputs", "staged")
        for path in (data_dir / folder).rglob("*")
        if path.is_file()
    ]


async def test_an_imagine_is_kept_in_the_bucket_delivered_from_it_and_forgotten_there(
    bucket: Bucket, launch_bot: Launch
) -> None:
    bot = await launch_bot(extra=bucket.toml())
    server = bot.server
    ix = await server.send_slash_command(
        "imagine",
        {"prompt": "a red square", "seed": 3, "strength": 0.5},
        attachments={"image": ("photo.png", png((64, 64)), "image/png")},
    )
    job_id = job_id_of(await ix.wait_for_original(lambda m: "queued" in m.content, timeout=30))
    result = await ix.wait_for_original(finished, timeout=120)

    # The upload (the engine read it staged from the bucket) and the image are objects.
    (image,) = result.attachments
    stored = bucket.keys()
    (upload,) = {key for key in stored if key.startswith("inputs/")}
    assert stored == {upload, f"images/{job_id}/{job_id}-0.png"}
    assert bucket.read(f"images/{job_id}/{job_id}-0.png") == image.data
    assert bucket.read(upload) == png((64, 64))
    # Nothing stays in the local spool once the job is stored.
    assert local_files(bot.data_dir) == []

    # A variation reads the image back from the bucket; its own image goes there too.
    variation, made = await click_and_finish(bot, result, f"atelier:v:{job_id}:1", server.user_id)
    assert len(made.attachments) == 1
    stored = bucket.keys()
    assert f"images/{variation}/{variation}-0.png" in stored

    ask = await server.send_slash_command("forget-me")
    question = await ask.wait_for_original(timeout=5)
    (button,) = question.custom_ids
    confirm = await server.click_button(question, button)
    await confirm.wait_for_callback(timeout=3)
    await ask.wait_for_original(lambda m: "Done" in m.content, timeout=30)

    assert bucket.keys() == set()
    assert local_files(bot.data_dir) == []
    # The credentials came from the environment; the bot never logs them.
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in bot.log.read_text(errors="replace")
