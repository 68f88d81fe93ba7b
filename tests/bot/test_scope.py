"""Where the bot serves: `[discord] allowed_guild_ids` and `allowed_channel_ids`."""

from __future__ import annotations

import asyncio
from typing import Any

import discord
import pytest
from discord.state import ConnectionState

from bot.config import DiscordConfig
from bot.discord.bot import AtelierBot
from bot.discord.cogs.scope import out_of_scope
from bot.discord.tree import GuardedTree

HOME, ELSEWHERE = 10, 11
STUDIO, LOBBY, THREAD = 20, 21, 22
LIMITED = DiscordConfig(allowed_guild_ids=[HOME], allowed_channel_ids=[STUDIO])


def test_no_lists_serve_everywhere() -> None:
    assert out_of_scope(DiscordConfig(), "imagine", None, (None,)) is None
    assert out_of_scope(DiscordConfig(), "imagine", ELSEWHERE, (LOBBY, None)) is None


def test_other_servers_and_direct_messages_are_refused_politely() -> None:
    elsewhere = out_of_scope(LIMITED, "imagine", ELSEWHERE, (STUDIO, None))
    assert elsewhere == "I am not set up to work in this server, sorry."
    assert "direct messages" in (out_of_scope(LIMITED, "me", None, (5, None)) or "")
    assert out_of_scope(LIMITED, "admin", ELSEWHERE, (STUDIO, None)) is not None


def test_only_the_allowed_channels_and_their_threads_but_admin_anywhere_at_home() -> None:
    assert out_of_scope(LIMITED, "imagine", HOME, (STUDIO, None)) is None
    assert out_of_scope(LIMITED, "imagine", HOME, (THREAD, STUDIO)) is None
    lobby = out_of_scope(LIMITED, "imagine", HOME, (LOBBY, None))
    assert lobby == f"I only work in <#{STUDIO}>; please ask me there."
    assert out_of_scope(LIMITED, "admin", HOME, (LOBBY, None)) is None


def test_forget_me_works_everywhere() -> None:
    assert out_of_scope(LIMITED, "forget-me", ELSEWHERE, (LOBBY, None)) is None
    assert out_of_scope(LIMITED, "forget-me", None, (5, None)) is None


async def test_the_bots_connection_runs_the_guard_before_any_button_or_form_is_handed_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The guard of components and modals rests on discord.py internals: through the very
    parser discord.py calls for INTERACTION_CREATE, a refused click never reaches the view
    store and an allowed one does."""
    bot = AtelierBot(DiscordConfig())
    checked: list[discord.InteractionType] = []
    handed: list[str] = []

    async def guard(interaction: discord.Interaction[Any]) -> bool:
        checked.append(interaction.type)
        return str((interaction.data or {}).get("custom_id")) == "allowed"

    assert isinstance(bot.tree, GuardedTree)
    bot.tree.guard = guard
    monkeypatch.setattr(
        ConnectionState,
        "parse_interaction_create",
        lambda state, data: handed.append(data["data"]["custom_id"]),
    )
    parse = bot._connection.parsers["INTERACTION_CREATE"]
    for kind, custom_id in [(3, "refused"), (5, "refused"), (3, "allowed"), (5, "allowed")]:
        parse(interaction_payload(kind, custom_id))
    for _ in range(100):
        if len(checked) == 4:
            break
        await asyncio.sleep(0.01)
    component, modal = discord.InteractionType.component, discord.InteractionType.modal_submit
    assert sorted(checked) == sorted([component, modal] * 2)
    assert handed == ["allowed", "allowed"]


def interaction_payload(kind: int, custom_id: str) -> dict[str, Any]:
    """A component (3) or modal (5) interaction as the gateway sends it, from a DM."""
    return {
        "id": "1",
        "application_id": "2",
        "type": kind,
        "token": "t",
        "version": 1,
        "attachment_size_limit": 8 << 20,
        "entitlements": [],
        "authorizing_integration_owners": {},
        "data": {"custom_id": custom_id, "component_type": 2, "components": []},
        "user": {"id": "3", "username": "member", "discriminator": "0", "avatar": None},
    }
