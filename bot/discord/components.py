"""Buttons on job messages: V1..Vn (variation), U1..Un (2x upscale) and Cancel.

Each button's custom id carries the job id and image number, and discord.py's
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


@runtime_checkable
class JobButtonHandler(Protocol):
    """What the Jobs cog does with a click."""

    async def derive(
        self, interaction: discord.Interaction, action: str, job_id: str, number: int
    ) -> None: ...

    async def cancel(self, interaction: discord.Interaction, job_id: str) -> None: ...


def _handler(interaction: discord.Interaction) -> JobButtonHandler:
    client = interaction.client
    cog = client.get_cog(JOBS_COG) if isinstance(client, commands.Bot) else None
    if not isinstance(cog, JobButtonHandler):
        raise RuntimeError(f"the {JOBS_COG} cog is not loaded")
    return cog


class ImageButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"atelier:(?P<action>[vu]):(?P<job>[0-9a-f]{1,16}):(?P<number>[1-9])",
):
    def __init__(self, action: str, job_id: str, number: int) -> None:
        super().__init__(
            discord.ui.Button(
                label=f"{action.upper()}{number}",
                custom_id=f"atelier:{action}:{job_id}:{number}",
                style=discord.ButtonStyle.secondary,
                row=0 if action == "v" else 1,
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


def progress_view(job_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view


def result_view(job: Job) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for action in ACTIONS:
        for number in range(1, len(job.outputs) + 1):
            view.add_item(ImageButton(action, job.id, number))
    return view
