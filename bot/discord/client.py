"""The Discord client: connects, registers the commands, owns delivery."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import discord
from discord import app_commands

from ..config import Config
from ..jobs.service import JobService
from ..reports.console import AdminReports
from ..store.guilds import GuildStore
from ..store.quotas import QuotaStore
from ..store.users import UserStore
from .admin import AdminGroup
from .buttons import CancelButton, ImageButton
from .delivery import Delivery
from .imagine import imagine_command
from .member import MEMBER_COMMANDS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stores:
    """What the commands read and change besides jobs."""

    users: UserStore
    quotas: QuotaStore
    guilds: GuildStore
    reports: AdminReports


class AtelierClient(discord.Client):
    def __init__(self, config: Config, service: JobService, stores: Stores) -> None:
        # Slash commands need no privileged intents; guilds keeps channel info fresh.
        super().__init__(
            intents=discord.Intents(guilds=True),
            allowed_mentions=discord.AllowedMentions.none(),
        )
        self.config = config
        self.service = service
        self.accounts = stores.users
        self.quotas = stores.quotas
        self.moderation = stores.guilds
        self.reports = stores.reports
        self.audit = stores.reports.audit
        self.tree = app_commands.CommandTree(self)
        self.tree.error(self._on_command_error)
        self.delivery = Delivery(
            self, service.store, config.storage.data_dir, config.discord.progress_interval
        )
        service.add_listener(self.delivery)
        self.tree.add_command(imagine_command(sorted(config.models)))
        self.tree.add_command(AdminGroup())
        for command in MEMBER_COMMANDS:
            self.tree.add_command(command)

    def is_admin(self, interaction: discord.Interaction[Any]) -> bool:
        """Whether the member is an admin per `[admin]`: listed by id or holding a listed
        role; with both lists empty, members with Manage Server are."""
        admin = self.config.admin
        if not admin.user_ids and not admin.role_ids:
            permissions = getattr(interaction.user, "guild_permissions", None)
            return bool(permissions and permissions.manage_guild)
        roles = {role.id for role in getattr(interaction.user, "roles", [])}
        return interaction.user.id in admin.user_ids or bool(roles & set(admin.role_ids))

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
        if isinstance(error, app_commands.CheckFailure):
            return  # the check already told the member and audited it
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
