"""Where the bot serves, for buttons and forms: `[discord] allowed_guild_ids` and
`allowed_channel_ids` hold for every component and modal the bot registers, on old
results too, and in the DMs results were sent to."""

from __future__ import annotations

from typing import Any

import discord

import bot.app  # noqa: F401  (every cog: every button and form class the bot registers)
from tests.discord_server import InteractionHandle, Message

from .conftest import Launch
from .test_imagine import finished

STUDIO = 990_000_000_000_000_100


def registered(kind: type[Any]) -> set[type[Any]]:
    """The bot's own subclasses of `kind`, at any depth."""
    found: set[type[Any]] = set()
    waiting = list(kind.__subclasses__())
    while waiting:
        cls = waiting.pop()
        waiting += cls.__subclasses__()
        if cls.__module__.startswith("bot."):
            found.add(cls)
    return found


def enabled_ids(message: Message | None) -> list[str]:
    assert message is not None
    return [
        str(c["custom_id"])
        for c in message.iter_components()
        if "custom_id" in c and not c.get("disabled")
    ]


async def refusal(ix: InteractionHandle) -> str:
    """The private one-sentence answer of a refused click or form."""
    callback = await ix.wait_for_callback(timeout=10)
    assert callback.type == 4 and callback.data is not None, callback
    assert callback.data["flags"] & 64, callback.data
    return str(callback.data["content"])


async def test_buttons_and_forms_obey_the_scope_on_old_results_and_in_dms(
    launch_bot: Launch,
) -> None:
    # The long job below is put back in the queue at once when the bot stops.
    bot = await launch_bot(extra="[queue]\nstop_grace_seconds = 0\n", engine="job_timeout = 900")
    server = bot.server
    server.add_channel("studio", channel_id=STUDIO)

    # Before the admin restricts the bot: a result in #general with its forms open, a
    # result sent by DM, a /history page, and a long job showing its Cancel button.
    made = await server.send_slash_command("imagine", {"prompt": "a lighthouse", "seed": 1})
    result = await made.wait_for_original(finished, timeout=120)
    remix_id = next(i for i in result.custom_ids if i.startswith("atelier:remix:"))
    remix = await server.click_button(result, remix_id)
    image_form = await server.send_message_command("Imagine from image", result)
    forms = {"RemixModal": remix, "ImagineModal": image_form}
    for form in forms.values():
        assert (await form.wait_for_callback(timeout=10)).type == 9
    await (await server.send_slash_command("settings", {"delivery": "dm"})).wait_for_callback()
    by_dm = await server.send_slash_command("imagine", {"prompt": "a letter", "seed": 2})
    await by_dm.wait_for_original(lambda m: "sent to your DMs" in m.content, timeout=120)
    (letter,) = server.dm_messages(server.user_id)
    page = await server.send_slash_command("history", {"count": 1})
    await page.wait_for_callback()
    # Four images of 150 steps: it still runs (again, after the restart) when the test ends.
    slow = await server.send_slash_command(
        "imagine", {"prompt": "slow tide", "steps": 150, "count": 4}
    )
    await slow.wait_for_original(lambda m: ": step " in m.content, timeout=120)

    # The admin restricts the bot to this server's #studio and restarts it.
    await bot.kill()
    restricted = f"allowed_guild_ids = [{server.guild_id}]\nallowed_channel_ids = [{STUDIO}]\n"
    bot.config.write_text(bot.config.read_text().replace("[discord]\n", f"[discord]\n{restricted}"))
    await bot.start()
    made_id = remix_id.split(":")[2]
    (slow_id,) = (
        cid.split(":")[2] for cid in enabled_ids(server.message(slow.original_message_id or 0))
    )

    # Every button on those messages, in #general and in the DM, is refused privately.
    clicked: list[str] = []
    messages = [slow.original_message_id, made.original_message_id, page.original_message_id]
    for message_id in [*messages, letter.id]:
        assert message_id is not None
        for custom_id in enabled_ids(server.message(message_id)):
            answer = await refusal(await server.click_button(message_id, custom_id))
            if message_id == letter.id:
                assert answer == (
                    "⚠️ I do not take commands in direct messages; please use me in a server."
                )
            else:
                assert answer == f"⚠️ I only work in <#{STUDIO}>; please ask me there."
            clicked.append(custom_id)
    values = {
        "RemixModal": {"prompt": "a lighthouse at noon"},
        "ImagineModal": {"prompt": "a lighthouse", "strength": "0.5"},
    }
    for name, form in forms.items():
        sent = await server.submit_modal(form, values[name])
        assert "I only work in" in await refusal(sent)

    # Each kind the bot registers was tried: a new button or form is tested here too.
    for item in registered(discord.ui.DynamicItem):
        template = item.__discord_ui_compiled_template__
        assert any(template.fullmatch(custom_id) for custom_id in clicked), item
    assert {modal.__name__ for modal in registered(discord.ui.Modal)} == set(forms)
    assert any(i.startswith("atelier:v:") for i in enabled_ids(letter))

    # Each refusal is audited as out of scope; nothing was made, cancelled or deleted.
    await bot.wait_for_rows(
        "select n from (select count(*) as n from audit_log where action in"
        " ('button.refused', 'form.refused') and params like '%out_of_scope%') where n = :n",
        n=len(clicked) + len(forms),
    )
    waiting = bot.rows("select id from jobs where state in ('queued', 'running')")
    assert waiting == [{"id": slow_id}]
    assert len(bot.rows("select id from jobs")) == 3
    assert bot.rows("select count(*) as n from outputs where job_id = :id", id=made_id) == [
        {"n": 1}
    ]

    # /admin keeps every channel of the server, and so do the buttons of its replies.
    audit = await server.send_slash_command("admin audit", user_id=server.owner_id)
    await audit.wait_for_callback(timeout=10)
    assert audit.original_message_id is not None
    pages = server.message(audit.original_message_id)
    assert pages is not None
    older = next(c for c in pages.iter_components() if c.get("label") == "Older ▶")
    turned = await server.click_button(
        audit.original_message_id, str(older["custom_id"]), user_id=server.owner_id
    )
    assert (await turned.wait_for_callback(timeout=10)).type == 7
