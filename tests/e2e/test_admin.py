"""The admin console and member accountability, end to end through the local server."""

from __future__ import annotations

import asyncio
import csv
import io
from typing import Any

from discord import app_commands
from PIL import Image

from bot.discord.cogs.admin import AdminCog
from tests.discord_server import LocalDiscord

from .conftest import Launch, RunningBot
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
        STRING: "kettle",
        BOOLEAN: True,
        USER: member,
        ROLE: role,
        CHANNEL: channel,
        MENTIONABLE: member,
    }
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
    """Every table but the audit log (refusals add to it) and the heartbeats (a timer's)."""
    tables = [
        row["name"]
        for row in running_bot.rows("select name from sqlite_master where type = 'table'")
        if row["name"] not in ("audit_log", "heartbeats")
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
            action=action,
            member=server.user_id,
        ), path
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
        "admin quota set",
        {"target": server.user_id, "images_per_day": 1},
        user_id=server.owner_id,
    )
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


# Who may use each /admin action (README, "Admin console"): a server's manager only what
# stays inside their server, and never a term `everywhere`; the owner everything.
IN_OWN_SERVER = {
    *("admin usage", "admin audit", "admin export", "admin queue"),
    *("admin blocklist add", "admin blocklist remove", "admin blocklist list"),
}


def admin_cog_leaves() -> set[str]:
    """Every leaf command the AdminCog defines ("admin quota set")."""
    found: set[str] = set()
    for command in AdminCog.__cog_app_commands__:
        inner = command.walk_commands() if isinstance(command, app_commands.Group) else [command]
        found |= {f"admin {c.qualified_name}" for c in inner if isinstance(c, app_commands.Command)}
    return found


def allowed(who: str, path: str, values: dict[str, object]) -> bool:
    if who == "owner":
        return True
    return who == "server manager" and path in IN_OWN_SERVER and not values.get("everywhere")


def with_booleans(values: dict[str, object], flag: bool) -> dict[str, object]:
    return {name: flag if isinstance(value, bool) else value for name, value in values.items()}


async def test_admin_reach_walking_every_command_as_member_server_manager_and_owner(
    launch_bot: Launch,
) -> None:
    """The default config (no [admin] ids): the application's owner, read from Discord,
    administers everything; the owner of another server the bot was invited to only that
    server; a member nothing. Each call of the whole command tree (as synced from the
    cog, so a command added later is walked too) changes the database only where the
    rule allows, and a refusal leaves an audit entry."""
    running_bot = await launch_bot(admin="", other_guilds=["A stranger's server"])
    server = running_bot.server
    (elsewhere,) = server.other_guilds
    await server.wait_for_commands(timeout=30, syncs=len(server.guild_ids))
    # A job in each server, finished and delivered, so nothing moves during the walk.
    await make_one_image(running_bot)
    ix = await server.send_slash_command(
        "imagine", {"prompt": "a teapot", "seed": 2}, channel_id=elsewhere.channel_id
    )
    await ix.wait_for_original(finished, timeout=120)
    for _ in range(200):
        if running_bot.rows("select id from jobs where delivered_at is null") == []:
            break
        await asyncio.sleep(0.05)
    role = server.add_role("artists")
    admin = next(c for c in server.commands if c["name"] == "admin")
    leaves = subcommand_paths(admin)
    assert {path for path, _ in leaves} == admin_cog_leaves()

    # (who, user id, channel, the member and role an attack would aim at there)
    actors = [
        ("member", server.user_id, server.channel_id, server.user_id, role),
        (
            "server manager",
            elsewhere.owner_id,
            elsewhere.channel_id,
            elsewhere.user_id,
            elsewhere.guild_id,
        ),  # their server's @everyone role
        ("owner", server.owner_id, server.channel_id, server.user_id, role),
    ]
    for who, user_id, channel_id, member, target_role in actors:
        for path, options in leaves:
            harmful = harmful_values(options, member, target_role, channel_id)
            for values in {str(v): v for v in (harmful, with_booleans(harmful, False))}.values():
                cell = f"{who}: /{path} {values}"
                before = database_except_audit(running_bot)
                ix = await server.send_slash_command(
                    path, values, user_id=user_id, channel_id=channel_id
                )
                callback = await ix.wait_for_callback(timeout=10)
                action = path.replace(" ", ".")
                if allowed(who, path, values):
                    if callback.type == 5:  # deferred: wait for the answer
                        await ix.wait_for_original(timeout=60)
                    else:
                        assert "⚠️" not in callback.data["content"], cell
                    assert running_bot.rows(
                        "select id from audit_log where action = :action and actor_id = :user",
                        action=action,
                        user=user_id,
                    ), cell
                    continue
                assert callback.type == 4 and callback.data["flags"] & 64, cell
                assert callback.data["content"].startswith("⚠️"), cell
                assert await running_bot.wait_for_rows(
                    "select id from audit_log where action = :action and actor_id = :user",
                    action=f"{action}.refused",
                    user=user_id,
                ), cell
                assert database_except_audit(running_bot) == before, cell

    # The manager's own term went to their server's list, and came off it again.
    blocks = running_bot.rows(
        "select params from audit_log where action = 'blocklist.add' and actor_id = :user",
        user=elsewhere.owner_id,
    )
    assert [row["params"] for row in blocks] == [
        f'{{"term": "kettle", "guild_id": {elsewhere.guild_id}}}'
    ]
    # What the manager read was their server's only.
    ix = await server.send_slash_command(
        "admin export", {"days": 7}, user_id=elsewhere.owner_id, channel_id=elsewhere.channel_id
    )
    export = await ix.wait_for_original(lambda m: len(m.attachments) == 2, timeout=30)
    files = {a.filename: a.data.decode() for a in export.attachments}
    usage = list(csv.DictReader(io.StringIO(files["usage.csv"])))
    assert [row["user_id"] for row in usage] == [str(elsewhere.user_id)]
    audit = list(csv.DictReader(io.StringIO(files["audit.csv"])))
    assert audit and {row["guild_id"] for row in audit} == {str(elsewhere.guild_id)}


async def queue_menu(
    server: LocalDiscord, user_id: int, channel_id: int
) -> tuple[int, str, set[str]]:
    """/admin queue as `user_id`: its message, the custom id of its menu, the jobs offered."""
    listing = await server.send_slash_command("admin queue", user_id=user_id, channel_id=channel_id)
    await listing.wait_for_callback(timeout=10)
    message = server.message(listing.original_message_id or 0)
    assert message is not None
    (menu,) = (c for c in message.iter_components() if c["type"] == 3)
    return message.id, str(menu["custom_id"]), {str(o["value"]) for o in menu["options"]}


def cancel_button(server: LocalDiscord, message_id: int | None) -> str:
    message = server.message(message_id or 0)
    assert message is not None
    (cancel,) = (i for i in message.custom_ids if i.startswith("atelier:cancel:"))
    return cancel


async def test_a_server_manager_lists_and_cancels_only_their_servers_jobs(
    launch_bot: Launch,
) -> None:
    """/admin queue and the Cancel button: the owner of another server sees and stops that
    server's jobs only; the application's owner sees every job. Each answer says what
    happened; a refusal is private and audited."""
    # The slow job still runs when the test ends: the stop puts it back at once, rather
    # than waiting the 30 s grace that the fixture's own stop also waits.
    running_bot = await launch_bot(
        extra="[queue]\nstop_grace_seconds = 0\n",
        admin="",
        other_guilds=["A stranger's server"],
    )
    server = running_bot.server
    (elsewhere,) = server.other_guilds
    await server.wait_for_commands(timeout=30, syncs=len(server.guild_ids))
    slow = await server.send_slash_command("imagine", {"prompt": "slow tide", "steps": 150})
    await slow.wait_for_original(lambda m: ": step " in m.content, timeout=120)
    theirs = []
    for prompt in ("a teapot", "a kettle"):  # queued behind the slow job
        ix = await server.send_slash_command(
            "imagine", {"prompt": prompt, "steps": 150}, channel_id=elsewhere.channel_id
        )
        await ix.wait_for_original(timeout=60)
        theirs.append(ix)
    slow_id, teapot_id, kettle_id = (
        row["id"] for row in running_bot.rows("select id from jobs order by created_at")
    )

    *_, offered = await queue_menu(server, server.owner_id, server.channel_id)
    assert offered == {slow_id, teapot_id, kettle_id}
    message_id, menu, offered = await queue_menu(server, elsewhere.owner_id, elsewhere.channel_id)
    assert offered == {teapot_id, kettle_id}
    picked = await server.select_menu(message_id, menu, [teapot_id], user_id=elsewhere.owner_id)
    answer = await picked.wait_for_followup(timeout=30)
    assert answer.content == f"🛑 Job `{teapot_id}` is cancelled."

    # The Cancel button: under their server's job it works; where they are a plain member
    # (they joined the first server too), under another member's job it is refused.
    server.add_member(elsewhere.owner_id, "stranger")
    kettle = theirs[1].original_message_id
    pressed = await server.click_button(
        kettle or 0, cancel_button(server, kettle), user_id=elsewhere.owner_id
    )
    answer = await pressed.wait_for_followup(timeout=30)
    assert answer.content == f"🛑 Job `{kettle_id}` is cancelled."
    pressed = await server.click_button(
        slow.original_message_id or 0,
        cancel_button(server, slow.original_message_id),
        user_id=elsewhere.owner_id,
    )
    callback = await pressed.wait_for_callback(timeout=10)
    assert callback.type == 4 and callback.data["flags"] & 64
    assert callback.data["content"].startswith("⚠️")
    assert await running_bot.wait_for_rows(
        "select id from audit_log where action = 'button.cancel.refused' and actor_id = :user",
        user=elsewhere.owner_id,
    )
    states = {r["id"]: r["state"] for r in running_bot.rows("select id, state from jobs")}
    assert states[teapot_id] == states[kettle_id] == "cancelled"
    assert states[slow_id] != "cancelled"
