"""/apikey create | list | revoke: a member's keys for the HTTP API.

A key acts as the member who made it (their quotas, bans, defaults, ledger and
audit; their roles and server as they are now). It is shown once, privately,
and stored only as a hash (bot.store.api_keys).
"""

from __future__ import annotations

from datetime import datetime

import discord
from discord import app_commands
from discord.ext import commands

from ...core.door import Origin
from ...core.views import MAX_NAME_CHARS, TooManyKeys
from ..common import Services, actor_of, requester_of, roles_of, tell_privately
from ..refusals import sentence

LIST_LIMIT = 25


def _when(moment: datetime | None) -> str:
    return f"<t:{int(moment.timestamp())}:R>" if moment is not None else "never"


class ApiKeyCog(commands.GroupCog, group_name="apikey", group_description="Keys for the HTTP API"):
    """The member's own API keys; every answer is ephemeral and every call audited."""

    def __init__(self, services: Services) -> None:
        self.services = services
        super().__init__()

    @app_commands.command(name="create", description="Make a key for the HTTP API (shown once)")
    @app_commands.describe(name="A label to tell your keys apart, e.g. laptop")
    async def create(
        self, interaction: discord.Interaction, name: app_commands.Range[str, 1, MAX_NAME_CHARS]
    ) -> None:
        services = self.services
        if (barred := await services.door.barred(interaction.user.id)) is not None:
            await tell_privately(interaction, sentence(barred))
            await services.door.refused(
                requester_of(interaction), "apikey.create", Origin.SLASH, barred
            )
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            key = await services.keys.create(
                interaction.user.id,
                interaction.user.name,
                name,
                interaction.guild_id,
                roles_of(interaction),
                actor_of(interaction),
            )
        except TooManyKeys as error:
            await interaction.followup.send(f"⚠️ {error}", ephemeral=True)
            return
        await interaction.followup.send(
            f"🔑 Your API key **{key.name}** (id {key.key_id}). Copy it now: it is shown only"
            f" this once.\n```\n{key.secret}\n```\nSend it as `Authorization: Bearer <key>` to"
            " this bot's HTTP API (Stability v1 compatible; ask an admin for its address). It"
            " acts as you: your quotas, your roles as they are now, your defaults. Keep it"
            " secret; `/apikey revoke` stops it at once.",
            ephemeral=True,
        )

    @app_commands.command(name="list", description="Your API keys (not the keys themselves)")
    async def list_keys(self, interaction: discord.Interaction) -> None:
        await self.services.audit.record_command(actor_of(interaction), "apikey.list")
        keys = await self.services.keys.keys_of(interaction.user.id)
        if not keys:
            text = "You have no API keys; `/apikey create` makes one."
        else:
            lines = [
                f"`{key.id}` **{discord.utils.escape_markdown(key.name)}** · made"
                f" {_when(key.created_at)} · last used {_when(key.last_used_at)}"
                + (f" · revoked {_when(key.revoked_at)}" if key.revoked_at else "")
                for key in keys[:LIST_LIMIT]
            ]
            text = "Your API keys (id, name):\n" + "\n".join(lines)
        await interaction.response.send_message(text, ephemeral=True)

    @app_commands.command(name="revoke", description="Stop one of your API keys at once")
    @app_commands.describe(key="The key's id (see /apikey list)")
    async def revoke(self, interaction: discord.Interaction, key: int) -> None:
        if await self.services.keys.revoke(key, interaction.user.id, actor_of(interaction)):
            await interaction.response.send_message(
                f"🗑️ API key `{key}` is revoked: requests with it are refused from now on.",
                ephemeral=True,
            )
        else:
            await interaction.response.send_message(
                f"⚠️ You have no active API key `{key}` (see `/apikey list`).", ephemeral=True
            )

    @revoke.autocomplete("key")
    async def active_keys(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[int]]:
        keys = await self.services.keys.keys_of(interaction.user.id)
        return [
            app_commands.Choice(name=f"{key.id}: {key.name}"[:100], value=key.id)
            for key in keys
            if key.revoked_at is None and current in f"{key.id} {key.name}"
        ][:25]
