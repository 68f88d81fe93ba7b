"""The member's studio end to end: multi-job prompts, result buttons, member commands."""

from __future__ import annotations

import io

from PIL import Image

from bot.jobs.spec import fit_aspect
from tests.discord_server import InteractionHandle, Message

from .conftest import RunningBot
from .test_imagine import finished


def sizes(message: Message) -> list[tuple[int, int]]:
    return [Image.open(io.BytesIO(a.data)).size for a in message.attachments]


def fields(message: Message) -> dict[str, str]:
    return {field["name"]: field["value"] for field in message.embeds[0]["fields"]}


async def results_of(ix: InteractionHandle, jobs: int) -> list[Message]:
    """The finished message of each job of a multi-job command: the original reply,
    then its follow-ups."""
    first = await ix.wait_for_original(finished, timeout=120)
    rest = []
    for number in range(2, jobs + 1):
        rest.append(
            await ix.wait_for_followup(
                lambda m, n=number: finished(m) and m.id != first.id and m not in rest,
                timeout=120,
            )
        )
    return [first, *rest]


async def test_flags_make_several_jobs_each_in_its_own_message(running_bot: RunningBot) -> None:
    server = running_bot.server
    ix = await server.send_slash_command(
        "imagine", {"prompt": "a fox --ar 21:9 --n 2 --no text", "seed": 40}
    )
    assert (await ix.wait_for_callback(timeout=3)).type == 5
    queued = await ix.wait_for_original(lambda m: "queued" in m.content, timeout=30)
    assert "(1/2)" in queued.content and "Estimated cost:" in queued.content
    assert "GPU s ≈ " in queued.content and "EUR" in queued.content
    first, second = await results_of(ix, 2)
    wide = fit_aspect("21:9", 64, 64)
    assert sizes(first) == sizes(second) == [wide]
    assert fields(first)["Negative prompt"] == fields(second)["Negative prompt"] == "text"
    assert fields(first)["Prompt"] == fields(second)["Prompt"] == "a fox"
    assert (fields(first)["Seed"], fields(second)["Seed"]) == ("#1: 40", "#1: 41")
    jobs = running_bot.rows("select id, message_id from jobs order by created_at")
    assert len(jobs) == 2
    assert {job["message_id"] for job in jobs} == {first.id, second.id}
    (command,) = running_bot.rows("select state, outcome from received_commands")
    assert command["state"] == "handled"
    assert str(command["outcome"]).split() == ["queued", *(str(job["id"]) for job in jobs)]


async def test_choices_in_braces_make_one_job_per_prompt(running_bot: RunningBot) -> None:
    ix = await running_bot.server.send_slash_command("imagine", {"prompt": "a {red,blue} fox"})
    messages = await results_of(ix, 2)
    assert [fields(m)["Prompt"] for m in messages] == ["a red fox", "a blue fox"]
    assert all(sizes(m) == [(64, 64)] for m in messages)
    assert len(running_bot.rows("select id from jobs")) == 2


async def test_an_unknown_flag_is_refused_with_its_name(running_bot: RunningBot) -> None:
    ix = await running_bot.server.send_slash_command("imagine", {"prompt": "a fox --bogus 3"})
    callback = await ix.wait_for_callback(timeout=3)
    assert callback.type == 4 and callback.data["flags"] & 64
    assert "Unknown flag `--bogus`" in callback.data["content"]
    assert running_bot.rows("select id from jobs") == []
