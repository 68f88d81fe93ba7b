"""The bot's command tree, with one check that runs before every command of every cog."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import discord
from discord import app_commands

Guard = Callable[[discord.Interaction[Any]], Awaitable[bool]]


class GuardedTree(app_commands.CommandTree[Any]):
    """The command tree with one check before every slash command and menu of every cog:
    `guard` (set by the cog that owns it) answers and returns False to stop a command."""

    def __init__(self, client: discord.Client, **options: Any) -> None:
        super().__init__(client, **options)
        self.guard: Guard | None = None

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        return True if self.guard is None else await self.guard(interaction)
