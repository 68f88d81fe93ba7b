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


def job_id_of(message: Message) -> str:
    return message.content.split("`")[1]


async def click_and_finish(
    bot: RunningBot, message: Message, custom_id: str, user_id: int
) -> tuple[str, Message]:
    """Click a button that queues a job; its job id and result."""
    ix = await bot.server.click_button(message, custom_id, user_id=user_id)
    assert (await ix.wait_for_callback(timeout=3)).type == 5
    queued = await ix.wait_for_original(lambda m: "queued" in m.content, timeout=30)
    return job_id_of(queued), await ix.wait_for_original(finished, timeout=120)


async def test_result_buttons_work_after_a_restart_for_the_owner_and_other_members(
    running_bot: RunningBot,
) -> None:
    bot, server = running_bot, running_bot.server
    other = server.add_member(name="other")
    ix = await server.send_slash_command("imagine", {"prompt": "a lighthouse", "seed": 7})
    result = await ix.wait_for_original(finished, timeout=120)
    job = job_id_of(await ix.wait_for_original(lambda m: "queued" in m.content))
    buttons = [f"atelier:{b}:{job}" for b in ("reroll", "remix", "delete")] + [f"atelier:s:{job}:1"]
    assert set(buttons) <= set(result.custom_ids)
    await bot.restart()

    # Another member re-rolls and varies it: new jobs of theirs, charged to them.
    rerolled_id, rerolled = await click_and_finish(bot, result, f"atelier:reroll:{job}", other)
    assert fields(rerolled)["Prompt"] == "a lighthouse"
    assert fields(rerolled)["Seed"] != "#1: 7"
    strong_id, strong = await click_and_finish(bot, result, f"atelier:s:{job}:1", other)
    assert sizes(strong) == [(64, 64)]
    rows = bot.rows(
        "select id, user_id, spec from jobs where id in (:a, :b)", a=rerolled_id, b=strong_id
    )
    assert {row["user_id"] for row in rows} == {other}
    strong_spec = next(str(row["spec"]) for row in rows if row["id"] == strong_id)
    assert '"strength": 0.85' in strong_spec and '"mode": "variation"' in strong_spec
    charged = bot.rows("select job_id, user_id from usage_ledger where user_id = :u", u=other)
    assert len(charged) == 2

    # Remix: a modal with the prompt, then the same seed with the new words.
    remix = await server.click_button(result, f"atelier:remix:{job}", user_id=other)
    modal = await remix.wait_for_callback(timeout=3)
    assert modal.type == 9
    assert "a lighthouse" in str(modal.data)
    submitted = await server.submit_modal(
        remix, {"prompt": "a lighthouse at night --cfg 5", "negative": "fog"}
    )
    assert (await submitted.wait_for_callback(timeout=3)).type == 5
    remixed = await submitted.wait_for_original(finished, timeout=120)
    assert fields(remixed)["Prompt"] == "a lighthouse at night"
    assert fields(remixed)["Negative prompt"] == "fog"
    assert fields(remixed)["Seed"] == "#1: 7"

    # Delete: refused to another member, done for the owner (message and files).
    refused = await server.click_button(result, f"atelier:delete:{job}", user_id=other)
    answer = await refused.wait_for_callback(timeout=3)
    assert answer.type == 4 and answer.data["flags"] & 64
    assert "Only the member" in answer.data["content"]
    assert server.message(result.id) is not None and not server.message(result.id).deleted
    (path,) = bot.rows("select path from outputs where job_id = :id", id=job)
    assert (bot.data_dir / str(path["path"])).is_file()

    deleted = await server.click_button(result, f"atelier:delete:{job}")
    assert (await deleted.wait_for_callback(timeout=3)).type == 6
    await deleted.wait_for_followup(lambda m: "Deleted" in m.content, timeout=10)
    latest = server.message(result.id)
    assert latest is not None and latest.deleted
    assert bot.rows("select id from outputs where job_id = :id", id=job) == []
    assert not (bot.data_dir / str(path["path"])).exists()
    audit = bot.rows(
        "select actor_id, outcome from audit_log where action like '%delete%' order by id"
    )
    assert audit == [
        {"actor_id": other, "outcome": "refused"},
        {"actor_id": server.user_id, "outcome": "ok"},
    ]


async def test_cancel_queue_and_history_as_two_members(running_bot: RunningBot) -> None:
    bot, server = running_bot, running_bot.server
    other = server.add_member(name="other")
    slow = await server.send_slash_command("imagine", {"prompt": "slow tide", "steps": 150})
    running = await slow.wait_for_original(lambda m: ": step " in m.content, timeout=120)
    slow_id = job_id_of(running)
    waiting = await server.send_slash_command("imagine", {"prompt": "next tide", "seed": 3})
    waiting_id = job_id_of(await waiting.wait_for_original(lambda m: "queued" in m.content))
    theirs = await server.send_slash_command(
        "imagine", {"prompt": "their tide", "seed": 4}, user_id=other
    )
    await theirs.wait_for_original(lambda m: "queued" in m.content)

    mine = (await (await server.send_slash_command("queue")).wait_for_callback()).data
    assert mine["flags"] & 64
    assert f"`{slow_id}` running" in mine["content"]
    assert f"`{waiting_id}` position " in mine["content"]
    assert "1 waiting and 0 running, from 1 other member(s)" in mine["content"]
    seen = (
        await (await server.send_slash_command("queue", user_id=other)).wait_for_callback()
    ).data
    assert slow_id not in seen["content"] and "their tide" in seen["content"]
    assert "1 waiting and 1 running, from 1 other member(s)" in seen["content"]

    # Another member cannot cancel it; its owner stops it within a step.
    refused = await server.send_slash_command("cancel", {"job": slow_id}, user_id=other)
    assert "Only the member" in (await refused.wait_for_callback()).data["content"]
    cancel = await server.send_slash_command("cancel", {"job": slow_id})
    assert "is cancelled" in (await cancel.wait_for_followup(timeout=60)).content
    stopped = await slow.wait_for_original(lambda m: "cancelled" in m.content, timeout=60)
    assert not stopped.attachments
    await waiting.wait_for_original(finished, timeout=120)
    await theirs.wait_for_original(finished, timeout=120)
    assert bot.job_row(slow_id)["state"] == "cancelled"

    page = await server.send_slash_command("history", {"count": 1})
    first = (await page.wait_for_callback()).data
    assert first["flags"] & 64 and "Your jobs 1-1 of 2" in first["content"]
    assert f"`{waiting_id}`" in first["content"] and "seed 3" in first["content"]
    link = f"/channels/{server.guild_id}/{server.channel_id}/"
    assert link in first["content"]
    older = await server.click_button(page.original_message_id or 0, _older(first))
    second = (await older.wait_for_callback()).data
    assert second["content"].startswith("**Your jobs 2-2 of 2**") and slow_id in second["content"]
    assert "🛑" in second["content"]
    theirs_page = await server.send_slash_command("history", user_id=other)
    only = (await theirs_page.wait_for_callback()).data["content"]
    assert "Your jobs 1-1 of 1" in only and "their tide" in only and slow_id not in only


def _older(page: dict[str, object]) -> str:
    ids = [c["custom_id"] for row in page["components"] for c in row["components"]]  # type: ignore[attr-defined]
    return next(i for i in ids if i.startswith("atelier:history:older:"))


async def test_private_replies_are_ephemeral_and_their_buttons_work(
    running_bot: RunningBot,
) -> None:
    server = running_bot.server
    ix = await server.send_slash_command("imagine", {"prompt": "a secret", "private": True})
    deferral = await ix.wait_for_callback(timeout=3)
    assert deferral.type == 5 and deferral.data["flags"] & 64
    result = await ix.wait_for_original(finished, timeout=120)
    assert result.ephemeral
    assert result not in server.channel_messages()
    job = job_id_of(await ix.wait_for_original(lambda m: "queued" in m.content))
    again = await server.click_button(result, f"atelier:reroll:{job}")
    assert (await again.wait_for_callback(timeout=3)).data["flags"] & 64
    rerolled = await again.wait_for_original(finished, timeout=120)
    assert rerolled.ephemeral and fields(rerolled)["Prompt"] == "a secret"

    # The setting does the same for every reply, and delivery:DM sends results by DM.
    settings = await server.send_slash_command("settings", {"private": True, "delivery": "dm"})
    assert "private = True" in (await settings.wait_for_callback()).data["content"]
    by_dm = await server.send_slash_command("imagine", {"prompt": "a letter", "seed": 8})
    assert (await by_dm.wait_for_callback(timeout=3)).data["flags"] & 64
    told = await by_dm.wait_for_original(lambda m: "sent to your DMs" in m.content, timeout=120)
    assert told.ephemeral
    (dm,) = server.dm_messages(server.user_id)
    assert fields(dm)["Prompt"] == "a letter" and len(dm.attachments) == 1

    # forget-me finds the result it sent by DM too, and deletes it.
    await running_bot.wait_for_rows(
        "select n from (select count(delivered_at) as n from jobs) where n = 3"
    )
    ask = await server.send_slash_command("forget-me")
    question = await ask.wait_for_original(timeout=5)
    (button,) = question.custom_ids
    await (await server.click_button(question, button)).wait_for_callback(timeout=3)
    done = await ask.wait_for_original(lambda m: "Done" in m.content, timeout=30)
    assert "3 image(s) deleted" in done.content
    gone = server.message(dm.id)
    assert gone is not None and gone.deleted
