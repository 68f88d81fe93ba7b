"""The Discord bot: connects, syncs the cogs' commands, reports command errors.

Everything a command does lives in a cog (bot/discord/cogs); this class only
holds the connection, so no cog needs to import it.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from ..config import DiscordConfig
from .tree import GuardedState, GuardedTree

log = logging.getLogger(__name__)

# What the bot asks the gateway for, no privileged intent (members, presences, content):
# guilds keeps channel info fresh; guild messages brings the messages that mention the
# bot or reply to it (with their content and attachments, which Discord sends without
# the Message Content intent only for those), read by the reply-with-a-sketch listener
# (bot/discord/cogs/imagine.py).
INTENTS = discord.Intents(guilds=True, guild_messages=True)


class AtelierBot(commands.Bot):
    def __init__(
        self, config: DiscordConfig, http_trace: aiohttp.TraceConfig | None = None
    ) -> None:
        # http_trace: bot.ops counts Discord's answers by route.
        options: dict[str, Any] = {} if http_trace is None else {"http_trace": http_trace}
        super().__init__(
            command_prefix=commands.when_mentioned,
            help_command=None,
            intents=INTENTS,
            allowed_mentions=discord.AllowedMentions.none(),
            tree_cls=GuardedTree,
            **options,
        )
        self._guild_ids = config.guild_ids
        self.tree.error(self._on_command_error)
        # The guard of buttons and forms rests on discord.py internals (Client._get_state,
        # ConnectionState's parsers): a discord.py that changed them fails here, closed,
        # rather than serving every button unguarded.
        state = self._connection
        if not (
            isinstance(state, GuardedState)
            and state.parsers.get("INTERACTION_CREATE") == state.parse_interaction_create
        ):
            raise RuntimeError("this discord.py cannot guard buttons and forms; install 2.7.x")

    def _get_state(self, **options: Any) -> GuardedState:
        """The connection state that runs the tree's guard before every button and form."""
        return GuardedState(
            dispatch=self.dispatch,
            handlers=self._handlers,
            hooks=self._hooks,
            http=self.http,
            **options,
        )

    async def setup_hook(self) -> None:
        await self.read_owners()
        if self._guild_ids:
            for guild_id in self._guild_ids:
                guild = discord.Object(guild_id)
                self.tree.copy_global_to(guild=guild)
                await self.tree.sync(guild=guild)
        else:
            await self.tree.sync()
        log.info(
            "commands synced (%s)", f"guilds {self._guild_ids}" if self._guild_ids else "global"
        )

    async def read_owners(self) -> None:
        """The application's owner or team: the global admins besides the `[admin]` ids
        (bot.admin_reach). discord.py reads the application from Discord at each login
        (a start); without it only those ids are global admins: a server's Manage Server
        never stands in for the owner."""
        info = self.application
        if info is None:
            log.warning(
                "the application's owner is unknown; only the [admin] ids administer every server"
            )
            return
        self.owner_ids = application_owners(info)
        log.info("global admins from Discord: %s", sorted(self.owner_ids))

    async def on_message(self, message: discord.Message) -> None:
        """No text commands: a message is only read by the cogs' listeners (not parsed as a
        prefix command, which "@Atelier a castle" would otherwise be)."""

    async def on_ready(self) -> None:
        log.info("connected as %s (%s)", self.user, self.user.id if self.user else "?")

    async def _on_command_error(
        self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError
    ) -> None:
        if isinstance(error, app_commands.CheckFailure):
            return  # the check already told the member and audited it
        log.error(
            "command %s failed", interaction.command and interaction.command.name, exc_info=error
        )
        message = "❌ Something went wrong on our side; the admins can find it in the log."
        try:
            if interaction.response.is_done():
                await interaction.followup.send(message, ephemeral=True)
            else:
                await interaction.response.send_message(message, ephemeral=True)
        except discord.HTTPException:
            log.warning("could not tell the member about the error")


def application_owners(info: discord.AppInfo) -> frozenset[int]:
    """The owner of a personal application; for a team's, its owner and the members with
    the Admin or Developer role (as discord.py's `is_owner` reads it: a Read-only member
    may not change the application on Discord either)."""
    if info.team is None:
        return frozenset({info.owner.id})
    members = {
        member.id
        for member in info.team.members
        if member.role in (discord.TeamMemberRole.admin, discord.TeamMemberRole.developer)
    }
    return frozenset({*members, *([info.team.owner_id] if info.team.owner_id else [])})
