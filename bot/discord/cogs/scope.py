"""Where the bot serves: `[discord] allowed_guild_ids` and `allowed_channel_ids`.

One check before every slash command and context menu, whichever cog holds
it (the command tree's `interaction_check`, see bot.discord.tree.GuardedTree),
so a command added later is covered too. Elsewhere a command is refused with a
private, polite sentence and audited. /forget-me works everywhere (a member's
right to their data does not depend on where they ask), and /admin in any
channel of an allowed server (admins keep their own channels). Messages the
bot reads (replies with a sketch) are ignored elsewhere, without an answer.
"""

from __future__ import annotations

from typing import Any

import discord
from discord.ext import commands

from ...config import DiscordConfig
from ..common import Services, refuse
from ..tree import GuardedTree

ANYWHERE = frozenset({"forget-me"})
ANY_CHANNEL = frozenset({"admin"})
# Channels named in a refusal, at most.
_NAMED_CHANNELS = 5


def out_of_scope(
    config: DiscordConfig,
    command: str,
    guild_id: int | None,
    channel_ids: tuple[int | None, ...],
) -> str | None:
    """Why `command` may not run here (a sentence for the member), or None when it may.

    `channel_ids`: the channel and, for a thread, its parent channel.
    """
    if command in ANYWHERE:
        return None
    if config.allowed_guild_ids and guild_id not in config.allowed_guild_ids:
        if guild_id is None:
            return "I do not take commands in direct messages; please use me in a server."
        return "I am not set up to work in this server, sorry."
    if command in ANY_CHANNEL or not config.allowed_channel_ids:
        return None
    if any(channel in config.allowed_channel_ids for channel in channel_ids):
        return None
    named = " ".join(f"<#{channel}>" for channel in config.allowed_channel_ids[:_NAMED_CHANNELS])
    return f"I only work in {named}; please ask me there."


def channel_ids(channel_id: int | None, channel: object) -> tuple[int | None, ...]:
    """The channel and, for a thread, its parent channel, as `out_of_scope` takes them."""
    return channel_id, getattr(channel, "parent_id", None)


class ScopeCog(commands.Cog, name="Scope"):
    """Owns the tree-wide check of where the bot serves."""

    def __init__(self, bot: commands.Bot, services: Services) -> None:
        self.bot = bot
        self.services = services

    async def cog_load(self) -> None:
        tree = self.bot.tree
        if not isinstance(tree, GuardedTree):
            raise RuntimeError("the bot's command tree cannot take a guard")
        tree.guard = self.in_scope

    async def cog_unload(self) -> None:
        tree = self.bot.tree
        if isinstance(tree, GuardedTree):
            tree.guard = None

    async def in_scope(self, interaction: discord.Interaction[Any]) -> bool:
        data: Any = interaction.data or {}
        command = str(data.get("name", ""))
        channels = channel_ids(interaction.channel_id, interaction.channel)
        reason = out_of_scope(self.services.config.discord, command, interaction.guild_id,
                              channels)  # fmt: skip
        if reason is None:
            return True
        if interaction.type is discord.InteractionType.application_command:
            await refuse(interaction, self.services.store, command or "command", reason,
                         kind="out_of_scope")  # fmt: skip
        return False  # autocomplete elsewhere: no suggestions, and nothing to say
