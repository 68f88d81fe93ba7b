"""/imagine end to end: Discord interaction -> bot -> engine process -> image reply -> SQLite."""

from __future__ import annotations

import asyncio
import io
from itertools import pairwise

from PIL import Image

from tests.discord_server import Message

from .conftest import RunningBot


def finished(message: Message) -> bool:
    """The final version of a job's reply: its result embed, or the failure (previews
    come as attachments too, so attachments alone do not tell)."""
    return bool(message.embeds) or "failed" in message.content


async def test_imagine_replies_with_images_and_records_the_job(running_bot: RunningBot) -> None:
    server = running_bot.server
    ix = await server.send_slash_command(
        "imagine", {"prompt": "a lighthouse at dusk", "count": 2, "seed": 1234}
    )
    deferral = await ix.wait_for_callback(timeout=3)
    assert deferral.type == 5  # deferred channel message
    assert deferral.received_at - ix.sent_at < 3.0

    queued = await ix.wait_for_original(lambda m: "queued" in m.content, timeout=10)
    job_id = queued.content.split("`")[1]
    result = await ix.wait_for_original(finished, timeout=120)
    # Every edit of the reply says something new (the queued line is shown once).
    texts = [message.content for message in ix.edits]
    assert all(before != after for before, after in pairwise(texts)), texts

    names = [attachment.filename for attachment in result.attachments]
    assert names == ["grid.jpg", f"atelier-{job_id}-1.png", f"atelier-{job_id}-2.png"]
    sizes = [Image.open(io.BytesIO(a.data)).size for a in result.attachments]
    assert sizes == [(128, 64), (64, 64), (64, 64)]
    embed = result.embeds[0]
    fields = {field["name"]: field["value"] for field in embed["fields"]}
    assert fields["Seeds"] == "#1: 1234, #2: 1235"
    assert fields["Prompt"] == "a lighthouse at dusk"
    assert fields["Model"] == "tiny" and fields["Size"] == "64×64"
    assert embed["image"]["url"] == result.attachments[0].url  # attachment://grid.jpg

    row = running_bot.job_row(job_id)
    assert row["state"] == "succeeded"
    assert isinstance(row["gpu_seconds"], float) and row["gpu_seconds"] > 0
    assert row["user_id"] == server.user_id
    # The token is a credential: it is dropped once the reply is delivered (just after the edit).
    assert await running_bot.wait_for_rows(
        "select id from jobs where id = :id and interaction_token is null", id=job_id
    )


async def test_second_imagine_while_one_runs_is_queued_not_lost(
    running_bot: RunningBot,
) -> None:
    server = running_bot.server
    first = await server.send_slash_command("imagine", {"prompt": "first", "seed": 1})
    second = await server.send_slash_command("imagine", {"prompt": "second", "seed": 2})
    results = await asyncio.gather(
        first.wait_for_original(finished, timeout=120),
        second.wait_for_original(finished, timeout=120),
    )
    for result, seed in zip(results, (1, 2), strict=True):
        assert len(result.attachments) == 1
        fields = {f["name"]: f["value"] for f in result.embeds[0]["fields"]}
        assert fields["Seed"] == f"#1: {seed}"


async def test_bad_input_is_refused_privately_and_audited(running_bot: RunningBot) -> None:
    server = running_bot.server
    ix = await server.send_slash_command("imagine", {"prompt": "x" * 100_000})
    callback = await ix.wait_for_callback(timeout=3)
    assert callback.type == 4
    assert callback.data["flags"] & 64  # ephemeral
    assert "limit is 1,500" in callback.data["content"]
    rows = await running_bot.wait_for_rows(
        "select action, outcome, actor_id from audit_log where action = 'imagine.refused'"
    )
    assert rows == [{"action": "imagine.refused", "outcome": "refused", "actor_id": server.user_id}]


async def test_mentions_in_a_prompt_never_ping(running_bot: RunningBot) -> None:
    server = running_bot.server
    ix = await server.send_slash_command("imagine", {"prompt": "@everyone party", "seed": 5})
    result = await ix.wait_for_original(finished, timeout=120)
    fields = {f["name"]: f["value"] for f in result.embeds[0]["fields"]}
    assert fields["Prompt"] == "@everyone party"
    edits = server.requests_matching("PATCH", r"/webhooks/.*/messages/@original")
    assert edits
    for edit in edits:
        assert isinstance(edit.body, dict)
        assert edit.body.get("allowed_mentions") == {"parse": []}


async def test_a_job_whose_engine_dies_is_reported_and_the_bot_keeps_serving(
    running_bot: RunningBot,
) -> None:
    server = running_bot.server
    doomed = await server.send_slash_command("imagine", {"prompt": "[crash] a vase", "seed": 1})
    queued = await doomed.wait_for_original(lambda m: "queued" in m.content, timeout=10)
    job_id = queued.content.split("`")[1]
    failure = await doomed.wait_for_original(finished, timeout=120)
    # One friendly sentence (it crashed its engine on each of its two attempts); the
    # engine's exit code and the stored error stay for the admins.
    assert failure.content == (
        f"❌ Job `{job_id}` failed: it stopped the image engine twice, so it was not retried;"
        " try other settings."
    )
    assert "exited" in str(running_bot.job_row(job_id)["error"])
    assert not failure.attachments
    assert running_bot.job_row(job_id)["state"] == "failed"

    after = await server.send_slash_command("imagine", {"prompt": "a vase", "seed": 1})
    result = await after.wait_for_original(finished, timeout=120)
    assert len(result.attachments) == 1
    assert "Traceback" not in failure.content
