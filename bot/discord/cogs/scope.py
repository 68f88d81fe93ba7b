"""Where the bot serves: `[discord] allowed_guild_ids` and `allowed_channel_ids`.

One check before every slash command, context menu, button click and form sent,
whichever cog holds it (the command tree's `interaction_check`, which
bot.discord.tree.GuardedState also runs before every component and modal), so a
command or button added later is covered too. Elsewhere it is refused with a
private, polite sentence and audited (kind `out_of_scope`). /forget-me works
everywhere (a member's right to their data does not depend on where they ask),
and /admin in any channel of an allowed server (admins keep their own channels);
the buttons on their replies go as far. Every other button and form has the
scope of /imagine, checked at each click: a result's buttons stop working in a
channel the bot no longer serves, and in DMs where DMs are not served (a result
sent by DM). Messages the bot reads (replies with a sketch) are ignored
elsewhere, without an answer.
"""

from __future__ import annotations

from collections import OrderedDict
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
# Replies of ANYWHERE and ANY_CHANNEL commands remembered (by their command's
# interaction id) so their buttons keep that command's scope: the newest this many.
# Those buttons live in memory only, so a restart forgets both together.
_REMEMBERED_REPLIES = 1024


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
        self._wider_replies: OrderedDict[int, str] = OrderedDict()

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
        command = self._command_of(interaction)
        channels = channel_ids(interaction.channel_id, interaction.channel)
        reason = out_of_scope(self.services.config.discord, command, interaction.guild_id, channels)
        if reason is None:
            if command in ANYWHERE | ANY_CHANNEL and _is_command(interaction):
                self._remember(interaction.id, command)
            return True
        if interaction.type is not discord.InteractionType.autocomplete:
            await refuse(
                interaction,
                self.services.store,
                _audited_as(interaction, command),
                reason,
                kind="out_of_scope",
            )
        return False  # autocomplete elsewhere: no suggestions, and nothing to say

    def _command_of(self, interaction: discord.Interaction[Any]) -> str:
        """The command whose scope applies: the one invoked; for a button or form, the
        command whose reply it sits on where that command reaches further, else none
        (the scope of every command that is not an exception)."""
        if _is_command(interaction) or interaction.type is discord.InteractionType.autocomplete:
            data: Any = interaction.data or {}
            return str(data.get("name", ""))
        message = interaction.message
        origin = message.interaction_metadata if message is not None else None
        return "" if origin is None else self._wider_replies.get(origin.id, "")

    def _remember(self, interaction_id: int, command: str) -> None:
        self._wider_replies[interaction_id] = command
        while len(self._wider_replies) > _REMEMBERED_REPLIES:
            self._wider_replies.popitem(last=False)


def _is_command(interaction: discord.Interaction[Any]) -> bool:
    return interaction.type is discord.InteractionType.application_command


def _audited_as(interaction: discord.Interaction[Any], command: str) -> str:
    """The refusal's audit action prefix: the command, or what kind of click it was."""
    if _is_command(interaction):
        return command or "command"
    return "form" if interaction.type is discord.InteractionType.modal_submit else "button"
