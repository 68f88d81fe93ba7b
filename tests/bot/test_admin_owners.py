"""The global admins the bot reads from Discord at start: the application's owner or team."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import discord
import pytest
import yarl

from bot.config import DiscordConfig
from bot.discord.bot import AtelierBot
from tests.discord_server import LocalDiscord


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LocalDiscord]:
    async with LocalDiscord() as local:
        monkeypatch.setattr(discord.http.Route, "BASE", local.api_base)
        monkeypatch.setattr(
            discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(local.gateway_url)
        )
        yield local
        assert local.schema_errors == []


async def logged_in(server: LocalDiscord) -> AtelierBot:
    """A bot after login, which runs setup_hook (owners, then the command sync)."""
    bot = AtelierBot(DiscordConfig(guild_ids=[server.guild_id]))
    await bot.login(server.bot_token)
    return bot


async def test_the_owner_of_a_personal_application_is_its_global_admin(
    server: LocalDiscord,
) -> None:
    bot = await logged_in(server)
    try:
        assert bot.owner_ids == {server.owner_id}
    finally:
        await bot.close()


async def test_a_teams_owner_admins_and_developers_are_global_admins_not_read_only_members(
    server: LocalDiscord,
) -> None:
    lead, developer, viewer = (server.add_member(name=n) for n in ("lead", "dev", "viewer"))
    server.set_team(lead, {lead: "admin", developer: "developer", viewer: "read_only"})
    bot = await logged_in(server)
    try:
        assert bot.owner_ids == {lead, developer}
    finally:
        await bot.close()


async def test_without_the_application_nobody_is_a_global_admin_from_discord(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Only the configured ids are left (bot.admin_reach): never Manage Server instead."""
    bot = AtelierBot(DiscordConfig())  # not logged in: Discord has told it nothing
    with caplog.at_level(logging.WARNING, "bot.discord.bot"):
        await bot.read_owners()
    assert not bot.owner_ids and not bot.owner_id
    assert "owner is unknown" in caplog.text
