"""/apikey through the local Discord server, with the bot's HTTP API on: a key made in
Discord works over HTTP as its member, and is refused the moment it is revoked."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.discord_server import LocalDiscord

from .conftest import RunningBot, bot_config

KEY = re.compile(r"atl_[0-9a-f]+_[A-Za-z0-9_-]+")
EPHEMERAL = 64


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class ApiBot:
    bot: RunningBot
    url: str  # the bot's HTTP API


@pytest.fixture
async def api_bot(tmp_path: Path, tiny_model_set: dict[str, Path]) -> AsyncIterator[ApiBot]:
    """`atelier run` with `[http] enabled`, against the local Discord server."""
    server = LocalDiscord()
    await server.start()
    config = bot_config(tmp_path, server, tiny_model_set)
    port = free_port()
    config.write_text(config.read_text() + f"\n[http]\nenabled = true\nport = {port}\n")
    bot = RunningBot(server, config, tmp_path / "data", tmp_path / "bot.log")
    code: int | None = None
    try:
        await bot.start()
        yield ApiBot(bot, f"http://127.0.0.1:{port}")
    finally:
        if bot.process is not None:
            code = await bot.stop()
        await server.stop()
    logged = bot.log.read_text(errors="replace")
    print(logged)
    assert code == 0, logged
    assert KEY.search(logged) is None  # no key ever reaches the log
    assert server.schema_errors == []
    assert server.unhandled == []


async def get(url: str, key: str) -> requests.Response:
    return await asyncio.to_thread(
        requests.get, url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


async def answer_of(bot: RunningBot, command: str, options: dict[str, Any]) -> str:
    """The member's private answer to a command (a reply, or the follow-up of a deferral)."""
    ix = await bot.server.send_slash_command(command, options)
    callback = await ix.wait_for_callback(timeout=10)
    if callback.type == 5:  # deferred: the answer is a follow-up
        message = await ix.wait_for_followup(lambda m: not m.loading, timeout=30)
    else:
        message = await ix.wait_for_original(timeout=10)
    assert message.flags & EPHEMERAL, message
    return message.content


async def test_a_key_made_in_discord_acts_as_its_member_until_revoked(api_bot: ApiBot) -> None:
    bot, url = api_bot.bot, api_bot.url
    created = await answer_of(bot, "apikey create", {"name": "laptop"})
    match = KEY.search(created)
    assert match is not None, created
    key = match.group()

    account = await get(f"{url}/v1/user/account", key)
    assert account.status_code == 200, account.text
    assert account.json()["id"] == str(bot.server.user_id)
    stored = bot.rows("select id, user_id, key_hash, guild_id from api_keys")
    assert [(row["user_id"], row["guild_id"]) for row in stored] == [
        (bot.server.user_id, bot.server.guild_id)
    ]
    assert key not in str(stored) and str(stored[0]["key_hash"]).startswith("scrypt$")

    listed = await answer_of(bot, "apikey list", {})
    assert "laptop" in listed and key not in listed
    revoked = await answer_of(bot, "apikey revoke", {"key": stored[0]["id"]})
    assert "revoked" in revoked
    refused = await get(f"{url}/v1/user/account", key)
    assert refused.status_code == 401 and refused.json()["name"] == "unauthorized"
    actions = [
        row["action"]
        for row in bot.rows("select action from audit_log where action like 'apikey.%'")
    ]
    assert actions == ["apikey.create", "apikey.list", "apikey.revoke"]
