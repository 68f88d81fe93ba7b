"""The Discord client: connects, registers the commands, owns delivery."""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands

from ..config import Config
from ..jobs.service import JobService
from .buttons import CancelButton, ImageButton
from .delivery import Delivery
from .imagine import imagine_command

log = logging.getLogger(__name__)


class AtelierClient(discord.Client):
    def __init__(self, config: Config, service: JobService) -> None:
        # Slash commands need no privileged intents; guilds keeps channel info fresh.
        super().__init__(
            intents=discord.Intents(guilds=True),
            allowed_mentions=discord.AllowedMentions.none(),
        )
        self.config = config
        self.service = service
        self.tree = app_commands.CommandTree(self)
        self.tree.error(self._on_command_error)
        self.delivery = Delivery(
            self, service.store, config.storage.data_dir, config.discord.progress_interval
        )
        service.add_listener(self.delivery)
        self.tree.add_command(imagine_command(sorted(config.models)))

    def is_admin(self, interaction: discord.Interaction[Any]) -> bool:
        """Whether the member may manage other members' jobs (Manage Server)."""
        permissions = getattr(interaction.user, "guild_permissions", None)
        return bool(permissions and permissions.manage_guild)

    async def setup_hook(self) -> None:
        # Buttons are rebuilt from their custom ids, so old messages work after a restart.
        self.add_dynamic_items(ImageButton, CancelButton)
        guild_ids = self.config.discord.guild_ids
        if guild_ids:
            for guild_id in guild_ids:
                guild = discord.Object(guild_id)
                self.tree.copy_global_to(guild=guild)
                await self.tree.sync(guild=guild)
        else:
            await self.tree.sync()
        log.info("commands synced (%s)", "guilds " + str(guild_ids) if guild_ids else "global")

    async def on_ready(self) -> None:
        log.info("connected as %s (%s)", self.user, self.user.id if self.user else "?")

    async def _on_command_error(
        self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError
    ) -> None:
        log.error("command %s failed", interaction.command and interaction.command.name,
                  exc_info=error)  # fmt: skip
        message = "❌ Something went wrong on our side; the admins can find it in the log."
        try:
            if interaction.response.is_done():
                await interaction.edit_original_response(content=message)
            else:
                await interaction.response.send_message(message, ephemeral=True)
        except discord.HTTPException:
            log.warning("could not tell the member about the error")
