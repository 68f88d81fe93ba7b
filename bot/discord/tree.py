"""The two doors interactions come in by, with one check before each: the command tree
(slash commands, context menus, autocomplete) and the connection state (button clicks,
menu choices and forms sent).

discord.py hands component and modal interactions straight to the views, dynamic
items and modals that claim them, past the command tree; so the tree's guard is run
for them here, where every one of them enters, before any claims it. A button or form
added later cannot skip it, and one it refuses is never handed on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.state import ConnectionState

if TYPE_CHECKING:  # discord.types imports in a cycle at run time
    from discord.types.gateway import InteractionCreateEvent

log = logging.getLogger(__name__)

Guard = Callable[[discord.Interaction[Any]], Awaitable[bool]]

# Discord's interaction types that the view store, not the command tree, dispatches.
_CLAIMED_BY_VIEWS = frozenset(
    {discord.InteractionType.component.value, discord.InteractionType.modal_submit.value}
)


class GuardedTree(app_commands.CommandTree[Any]):
    """The command tree with one check before every slash command and menu of every cog:
    `guard` (set by the cog that owns it) answers and returns False to stop a command.
    GuardedState runs the same guard before every button and form."""

    def __init__(self, client: discord.Client, **options: Any) -> None:
        super().__init__(client, **options)
        self.guard: Guard | None = None

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        return True if self.guard is None else await self.guard(interaction)


class GuardedState(ConnectionState[Any]):
    """The client's connection state: a component or modal interaction is handed to
    discord.py's view store only once the command tree's guard let it through."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._guarding: set[asyncio.Task[None]] = set()

    def parse_interaction_create(self, data: InteractionCreateEvent) -> None:
        tree = self._command_tree
        guard = tree.guard if isinstance(tree, GuardedTree) else None
        if guard is None or data["type"] not in _CLAIMED_BY_VIEWS:
            super().parse_interaction_create(data)
            return
        task = asyncio.create_task(self._guarded(guard, data), name=f"guard-{data['id']}")
        self._guarding.add(task)
        task.add_done_callback(self._guarding.discard)

    async def _guarded(self, guard: Guard, data: InteractionCreateEvent) -> None:
        try:
            allowed = await guard(discord.Interaction(data=data, state=self))
        except Exception:  # a check that fails lets nothing through
            log.exception("the check of interaction %s failed; it is ignored", data["id"])
            return
        if allowed:
            super().parse_interaction_create(data)
