"""Buttons on job messages: V1..Vn (variation), U1..Un (2x upscale), Vary (strong),
🔄 re-roll, ✏️ remix, 🗑️ delete, and Cancel while a job waits or runs.

Each button's custom id carries the job id (and image number), and discord.py's
DynamicItem rebuilds the button from it on every click, so the buttons keep
working after a restart. A click is handed to the Jobs cog (bot/discord/cogs/jobs.py),
which holds the services; this module only draws the buttons, so delivery can
use it without importing any cog.
"""

from __future__ import annotations

import re
from typing import Any, Protocol, Self, runtime_checkable

import discord
from discord.ext import commands

from ..store.models import Job

JOBS_COG = "Jobs"
ACTIONS = ("v", "u")
# One button per image: (label prefix, row).
_IMAGE_BUTTONS = {"v": ("V", 0), "u": ("U", 1), "s": ("Vary (strong)", 2)}
# One button per job: (label, emoji, style).
_JOB_BUTTONS = {
    "reroll": (None, "🔄", discord.ButtonStyle.secondary),
    "remix": ("Remix", "✏️", discord.ButtonStyle.secondary),
    "delete": (None, "🗑️", discord.ButtonStyle.secondary),
}


@runtime_checkable
class JobButtonHandler(Protocol):
    """What the Jobs cog does with a click."""

    async def derive(
        self, interaction: discord.Interaction, action: str, job_id: str, number: int
    ) -> None: ...

    async def cancel(self, interaction: discord.Interaction, job_id: str) -> None: ...

    async def reroll(self, interaction: discord.Interaction, job_id: str) -> None: ...

    async def remix(self, interaction: discord.Interaction, job_id: str) -> None: ...

    async def delete(self, interaction: discord.Interaction, job_id: str) -> None: ...

    async def history_page(
        self, interaction: discord.Interaction, offset: int, size: int
    ) -> None: ...


def _handler(interaction: discord.Interaction) -> JobButtonHandler:
    client = interaction.client
    cog = client.get_cog(JOBS_COG) if isinstance(client, commands.Bot) else None
    if not isinstance(cog, JobButtonHandler):
        raise RuntimeError(f"the {JOBS_COG} cog is not loaded")
    return cog


class ImageButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"atelier:(?P<action>[vus]):(?P<job>[0-9a-f]{1,16}):(?P<number>[1-9])",
):
    """V (subtle variation), U (2x upscale) or s (strong variation) of one image."""

    def __init__(self, action: str, job_id: str, number: int) -> None:
        label, row = _IMAGE_BUTTONS[action]
        super().__init__(
            discord.ui.Button(
                label=label if action == "s" else f"{label}{number}",
                custom_id=f"atelier:{action}:{job_id}:{number}",
                style=discord.ButtonStyle.secondary,
                row=row,
            )
        )
        self.action = action
        self.job_id = job_id
        self.number = number

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> Self:
        return cls(match["action"], match["job"], int(match["number"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await _handler(interaction).derive(interaction, self.action, self.job_id, self.number)


class CancelButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"atelier:cancel:(?P<job>[0-9a-f]{1,16})",
):
    def __init__(self, job_id: str) -> None:
        super().__init__(
            discord.ui.Button(
                label="Cancel",
                custom_id=f"atelier:cancel:{job_id}",
                style=discord.ButtonStyle.danger,
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> Self:
        return cls(match["job"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await _handler(interaction).cancel(interaction, self.job_id)


class JobButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"atelier:(?P<action>reroll|remix|delete):(?P<job>[0-9a-f]{1,16})",
):
    """🔄 re-roll, ✏️ remix or 🗑️ delete a finished job."""

    def __init__(self, action: str, job_id: str) -> None:
        label, emoji, style = _JOB_BUTTONS[action]
        super().__init__(
            discord.ui.Button(
                label=label, emoji=emoji, custom_id=f"atelier:{action}:{job_id}", style=style, row=2
            )
        )
        self.action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> Self:
        return cls(match["action"], match["job"])

    async def callback(self, interaction: discord.Interaction) -> None:
        handler = _handler(interaction)
        click = {"reroll": handler.reroll, "remix": handler.remix, "delete": handler.delete}
        await click[self.action](interaction, self.job_id)


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
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view


def result_view(job: Job) -> discord.ui.View:
    """V1..Vn and U1..Un, then 🔄, Vary (strong) on a single image (an upscale's too),
    ✏️ Remix and 🗑️."""
    view = discord.ui.View(timeout=None)
    for action in ACTIONS:
        for number in range(1, len(job.outputs) + 1):
            view.add_item(ImageButton(action, job.id, number))
    view.add_item(JobButton("reroll", job.id))
    if len(job.outputs) == 1:
        view.add_item(ImageButton("s", job.id, 1))
    view.add_item(JobButton("remix", job.id))
    view.add_item(JobButton("delete", job.id))
    return view
