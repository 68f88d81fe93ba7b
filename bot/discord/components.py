"""Buttons on job messages, drawn from the action registry (bot.core.actions): V1..Vn,
U1..Un, 🔄 re-roll, Vary (strong), ✏️ remix and 🗑️ delete under a result, Cancel while a
job waits or runs, 🔁 Try again under a job that failed.

Each button's custom id carries the action's key, the job id and, for a per-image
action, the image number; discord.py's DynamicItem rebuilds the button from it on
every click, so the buttons keep working after a restart. A click is handed to the
Jobs cog (bot/discord/cogs/jobs.py), which holds the services; this module only
draws the buttons, so delivery can use it without importing any cog.
"""

from __future__ import annotations

import re
from typing import Any, Protocol, Self, runtime_checkable

import discord
from discord.ext import commands

from ..core.actions import ACTIONS, BY_KEY, Action, ButtonStyle, buttons_for
from ..core.views import Job, JobState

JOBS_COG = "Jobs"
_STYLES = {
    ButtonStyle.SECONDARY: discord.ButtonStyle.secondary,
    ButtonStyle.DANGER: discord.ButtonStyle.danger,
}
_KEYS = "|".join(re.escape(action.key) for action in ACTIONS)


@runtime_checkable
class JobButtonHandler(Protocol):
    """What the Jobs cog does with a click."""

    async def act(
        self, interaction: discord.Interaction, action: Action, job_id: str, number: int | None
    ) -> None: ...

    async def history_page(
        self, interaction: discord.Interaction, offset: int, size: int
    ) -> None: ...


def _handler(interaction: discord.Interaction) -> JobButtonHandler:
    client = interaction.client
    cog = client.get_cog(JOBS_COG) if isinstance(client, commands.Bot) else None
    if not isinstance(cog, JobButtonHandler):
        raise RuntimeError(f"the {JOBS_COG} cog is not loaded")
    return cog


def _label(action: Action, number: int | None) -> str | None:
    button = action.button
    assert button is not None
    if button.label is None or number is None or not button.numbered:
        return button.label
    return f"{button.label}{number}"


class ActionButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=rf"atelier:(?P<key>{_KEYS}):(?P<job>[0-9a-f]{{1,16}})(?::(?P<number>[1-9]))?",
):
    """One registered action on one job (and image): its click goes to the Jobs cog."""

    def __init__(self, action: Action, job_id: str, number: int | None = None) -> None:
        button = action.button
        assert button is not None, f"{action.name} has no button"
        suffix = f":{number}" if number is not None else ""
        super().__init__(
            discord.ui.Button(
                label=_label(action, number),
                emoji=button.emoji,
                custom_id=f"atelier:{action.key}:{job_id}{suffix}",
                style=_STYLES[button.style],
                row=button.row,
            )
        )
        self.action = action
        self.job_id = job_id
        self.number = number

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> Self:
        number = int(match["number"]) if match["number"] else None
        return cls(BY_KEY[match["key"]], match["job"], number)

    async def callback(self, interaction: discord.Interaction) -> None:
        await _handler(interaction).act(interaction, self.action, self.job_id, self.number)


class HistoryButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"atelier:history:(?P<way>older|newer):(?P<offset>[0-9]{1,6}):(?P<size>[0-9]{1,2})",
):
    """◀ ▶ of /history: the page at `offset`, for whoever clicks (the list is theirs)."""

    def __init__(self, way: str, offset: int, size: int, disabled: bool = False) -> None:
        super().__init__(
            discord.ui.Button(
                label="◀ Newer" if way == "newer" else "Older ▶",
                custom_id=f"atelier:history:{way}:{offset}:{size}",
                style=discord.ButtonStyle.secondary,
                disabled=disabled,
            )
        )
        self.offset = offset
        self.size = size

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> Self:
        return cls(match["way"], int(match["offset"]), int(match["size"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await _handler(interaction).history_page(interaction, self.offset, self.size)


def history_view(offset: int, size: int, total: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(HistoryButton("newer", max(0, offset - size), size, disabled=offset == 0))
    view.add_item(HistoryButton("older", offset + size, size, disabled=offset + size >= total))
    return view


def progress_view(job_id: str) -> discord.ui.View:
    """The buttons while a job waits or runs (Cancel)."""
    return _view(job_id, buttons_for(JobState.QUEUED, 0))


def result_view(job: Job) -> discord.ui.View:
    """The buttons under an ended job, as the registry draws them for its state."""
    return _view(job.id, buttons_for(job.state, len(job.outputs), job.spec.draft))


def _view(job_id: str, buttons: list[tuple[Action, int | None]]) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for action, number in buttons:
        view.add_item(ActionButton(action, job_id, number))
    return view
