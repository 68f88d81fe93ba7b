"""The admin console and member accountability, end to end through the local server."""

from __future__ import annotations

import csv
import io
from typing import Any

from PIL import Image

from .conftest import RunningBot
from .test_imagine import finished


async def make_one_image(running_bot: RunningBot, prompt: str = "a kettle") -> str:
    ix = await running_bot.server.send_slash_command("imagine", {"prompt": prompt, "seed": 1})
    result = await ix.wait_for_original(finished, timeout=120)
    assert result.embeds, result.content
    return result.content


# Discord's application command option types (discord-openapi.json).
SUB_COMMAND, SUB_COMMAND_GROUP = 1, 2
STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER = 3, 4, 5, 6, 7, 8, 9, 10


def subcommand_paths(command: dict[str, Any], prefix: str = "") -> list[tuple[str, list[Any]]]:
    """Every leaf subcommand of a synced command ("admin quota set") with its options."""
    path = f"{prefix} {command['name']}".strip()
    options = command.get("options") or []
    nested = [o for o in options if o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP)]
    if not nested:
        return [(path, options)]
    return [leaf for option in nested for leaf in subcommand_paths(option, path)]


def harmful_values(options: list[dict[str, Any]], member: int, role: int, channel: int) -> dict:
    """A value for every option, aimed at changing as much as a real call could."""
    by_type: dict[int, object] = {
        STRING: "kettle", BOOLEAN: True, USER: member, ROLE: role, CHANNEL: channel,
        MENTIONABLE: member,
    }  # fmt: skip
    values: dict[str, object] = {}
    for option in options:
        kind = option["type"]
        if kind in (INTEGER, NUMBER):
            low = option.get("min_value", 1)
            values[option["name"]] = low if kind == INTEGER else float(low)
        elif kind in by_type:
            values[option["name"]] = by_type[kind]
    return values


def database_except_audit(running_bot: RunningBot) -> dict[str, list[dict[str, object]]]:
    tables = [
        row["name"]
        for row in running_bot.rows("select name from sqlite_master where type = 'table'")
        if row["name"] != "audit_log"
    ]
    return {table: running_bot.rows(f"select * from {table}") for table in sorted(tables)}


async def test_every_admin_subcommand_refuses_a_member_and_changes_nothing(
    running_bot: RunningBot,
) -> None:
    """Walks the synced command tree, so a subcommand added later is covered too."""
    server = running_bot.server
    await make_one_image(running_bot)  # a job, outputs and a ledger entry to protect
    # Delivery marks the job delivered just after the reply: wait, so nothing moves later.
    await running_bot.wait_for_rows("select id from jobs where delivered_at is not null")
    role = server.add_role("artists")
    admin = next(c for c in server.commands if c["name"] == "admin")
    leaves = subcommand_paths(admin)
    assert {"admin usage", "admin quota set", "admin quota reset", "admin ban"} <= {
        path for path, _ in leaves
    }
    before = database_except_audit(running_bot)
    for path, options in leaves:
        values = harmful_values(options, server.user_id, role, server.channel_id)
        ix = await server.send_slash_command(path, values)
        callback = await ix.wait_for_callback(timeout=3)
        assert callback.type == 4 and callback.data["flags"] & 64, path
        assert "for the bot's admins" in callback.data["content"], path
        action = path.replace(" ", ".") + ".refused"
        assert await running_bot.wait_for_rows(
            "select id from audit_log where action = :action and actor_id = :member",
            action=action, member=server.user_id,
        ), path  # fmt: skip
    assert database_except_audit(running_bot) == before


async def test_a_member_is_refused_admin_commands_server_side(running_bot: RunningBot) -> None:
    server = running_bot.server
    # The local server, like a misconfigured guild, lets the member invoke it anyway.
    ix = await server.send_slash_command("admin usage", {"days": 7})
    callback = await ix.wait_for_callback(timeout=3)
    assert callback.type == 4 and callback.data["flags"] & 64
    assert "for the bot's admins" in callback.data["content"]
    rows = await running_bot.wait_for_rows(
        "select actor_id, outcome from audit_log where action = 'admin.usage.refused'"
    )
    assert rows == [{"actor_id": server.user_id, "outcome": "refused"}]
    synced = next(c for c in server.commands if c["name"] == "admin")
    assert int(synced["default_member_permissions"]) == 1 << 5  # Manage Server


async def test_admin_usage_table_and_chart_then_csv_export_matches_the_ledger(
    running_bot: RunningBot,
) -> None:
    server = running_bot.server
    await make_one_image(running_bot)
    ix = await server.send_slash_command("admin usage", {"days": 7}, user_id=server.owner_id)
    reply = await ix.wait_for_original(lambda m: bool(m.attachments), timeout=30)
    assert reply.ephemeral
    assert str(server.user_id) in reply.content and "```" in reply.content
    (chart,) = reply.attachments
    with Image.open(io.BytesIO(chart.data)) as image:
        assert image.format == "PNG" and image.width >= 300

    ix = await server.send_slash_command("admin export", {"days": 7}, user_id=server.owner_id)
    export = await ix.wait_for_original(lambda m: len(m.attachments) == 2, timeout=30)
    files = {a.filename: a.data.decode() for a in export.attachments}
    usage = list(csv.DictReader(io.StringIO(files["usage.csv"])))
    ledger = running_bot.rows("select job_id, images, gpu_seconds, cost from usage_ledger")
    assert len(usage) == len(ledger) == 1
    assert usage[0]["job_id"] == ledger[0]["job_id"]
    assert int(usage[0]["images"]) == ledger[0]["images"] == 1
    assert abs(float(usage[0]["cost"]) - float(ledger[0]["cost"])) < 1e-6  # type: ignore[arg-type]
    gpu = float(ledger[0]["gpu_seconds"])  # type: ignore[arg-type]
    assert abs(float(ledger[0]["cost"]) - gpu * 3.6 / 3600) < 1e-6  # type: ignore[arg-type]
    audit = list(csv.DictReader(io.StringIO(files["audit.csv"])))
    assert {"job.queued", "job.succeeded", "admin.usage"} <= {row["action"] for row in audit}

    # A quota the member has used up: the next job is refused with the limit and the reset.
    quota = await server.send_slash_command(
        "admin quota set", {"target": server.user_id, "images_per_day": 1},
        user_id=server.owner_id,
    )  # fmt: skip
    assert "images/day 1" in (await quota.wait_for_callback(timeout=3)).data["content"]
    ix = await server.send_slash_command("imagine", {"prompt": "one more"})
    # Refused after the deferral: privately, in a follow-up.
    refused = await ix.wait_for_followup(lambda m: "⚠️" in m.content, timeout=30)
    assert refused.ephemeral
    assert "daily limit of 1 image" in refused.content and "<t:" in refused.content
    assert running_bot.rows("select count(*) as n from jobs") == [{"n": 1}]

    pages = await server.send_slash_command(
        "admin audit", {"user": server.user_id}, user_id=server.owner_id
    )
    first = (await pages.wait_for_callback(timeout=3)).data
    assert first["flags"] & 64 and "job.refused" in first["content"]

    models = await server.send_slash_command("admin models", user_id=server.owner_id)
    table = (await models.wait_for_original(lambda m: "```" in m.content, timeout=30)).content
    assert "tiny" in table and "cpu (sd," in table  # loaded on the CPU engine, SD family


async def test_a_banned_member_is_refused_politely_and_audited(running_bot: RunningBot) -> None:
    server = running_bot.server
    ban = await server.send_slash_command(
        "admin ban", {"user": server.user_id, "reason": "spam"}, user_id=server.owner_id
    )
    assert "is banned: spam" in (await ban.wait_for_callback(timeout=3)).data["content"]

    ix = await server.send_slash_command("imagine", {"prompt": "a kettle"})
    callback = await ix.wait_for_callback(timeout=3)
    assert callback.type == 4 and callback.data["flags"] & 64
    assert callback.data["content"] == "⚠️ You cannot use this bot: spam"
    rows = await running_bot.wait_for_rows(
        "select actor_id from audit_log where action = 'imagine.refused'"
    )
    assert rows == [{"actor_id": server.user_id}]
    assert running_bot.rows("select count(*) as n from jobs") == [{"n": 0}]
    bans = running_bot.rows("select actor_id, target from audit_log where action = 'user.ban'")
    assert bans == [{"actor_id": server.owner_id, "target": f"user:{server.user_id}"}]
    me = await server.send_slash_command("me")
    assert (
        "⛔ You cannot use the bot: spam" in (await me.wait_for_callback(timeout=3)).data["content"]
    )

    unban = await server.send_slash_command(
        "admin unban", {"user": server.user_id}, user_id=server.owner_id
    )
    assert "may use the bot again" in (await unban.wait_for_callback(timeout=3)).data["content"]
    await make_one_image(running_bot)

    block = await server.send_slash_command(
        "admin blocklist add", {"term": "Kettle"}, user_id=server.owner_id
    )
    await block.wait_for_callback(timeout=3)
    ix = await server.send_slash_command("imagine", {"prompt": "a KETTLE on a stove"})
    refused = (await ix.wait_for_callback(timeout=3)).data["content"]
    assert refused == "⚠️ Your prompt contains `kettle`, which this server does not allow."
    blocks = running_bot.rows("select params from audit_log where action = 'blocklist.add'")
    assert len(blocks) == 1 and "kettle" in str(blocks[0]["params"])


async def test_me_shows_usage_and_limits_and_forget_me_erases_prompts(
    running_bot: RunningBot,
) -> None:
    server = running_bot.server
    await make_one_image(running_bot, "my secret prompt")
    me = await server.send_slash_command("me")
    text = (await me.wait_for_callback(timeout=3)).data["content"]
    assert "Images today: 1 (no limit)" in text and "Daily limits reset <t:" in text

    ask = await server.send_slash_command("forget-me")
    prompt = await ask.wait_for_callback(timeout=3)
    assert prompt.data["flags"] & 64
    message = await ask.wait_for_original(timeout=5)
    (button,) = message.custom_ids
    confirm = await server.click_button(message, button)
    await confirm.wait_for_callback(timeout=5)
    done = await ask.wait_for_original(lambda m: "Done" in m.content, timeout=10)
    assert "1 image(s) deleted" in done.content
    specs = running_bot.rows("select user_id, spec from jobs")
    assert len(specs) == 1 and "my secret prompt" not in str(specs[0]["spec"])
    assert specs[0]["user_id"] != server.user_id  # only a pseudonym is left
    assert running_bot.rows("select count(*) as n from outputs") == [{"n": 0}]
    assert len(running_bot.rows("select id from usage_ledger")) == 1  # totals stay right
