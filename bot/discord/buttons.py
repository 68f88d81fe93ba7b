"""Buttons on job messages: V1..Vn (variation), U1..Un (2x upscale) and Cancel.

Each button's custom id carries the job id and image number, and discord.py's
DynamicItem rebuilds the button from it on every click, so the buttons keep
working after a restart. V and U read the stored output file, never Discord's
attachment link (which expires).
"""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING, Any, Self, cast

import discord

from engine.protocol import MAX_SEED, Mode

from ..jobs.spec import InputImage, JobSpec, derived_spec
from ..store.jobs import JobNotFound
from ..store.models import Job, JobState
from .errors import refuse
from .queueing import queue_job

if TYPE_CHECKING:
    from .client import AtelierClient

_ACTIONS = {"v": Mode.VARIATION, "u": Mode.UPSCALE}


def _client(interaction: discord.Interaction) -> AtelierClient:
    return cast("AtelierClient", interaction.client)


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
        client = _client(interaction)
        mode = _ACTIONS[self.action]
        command = f"button.{mode}"
        try:
            job = await client.service.store.get(self.job_id)
        except JobNotFound:
            await refuse(
                interaction, client.service.store, command, "That job is no longer stored."
            )
            return
        if job.state is not JobState.SUCCEEDED or self.number > len(job.outputs):
            await refuse(interaction, client.service.store, command, "That image does not exist.")
            return
        output = job.outputs[self.number - 1]
        if not client.service.output_path(output.path).is_file():
            reason = (
                f"Image {self.number} of job `{job.id}` is no longer stored; it cannot be reused."
            )
            await refuse(interaction, client.service.store, command, reason)
            return
        generation = client.config.generation
        variation = mode is Mode.VARIATION
        spec = derived_spec(
            JobSpec.model_validate(job.spec),
            (job.id, self.number),
            InputImage(output.path, output.width, output.height),
            mode,
            generation.variation_strength if variation else generation.upscale_strength,
            # A variation is a new roll; an upscale keeps the image's own seed.
            secrets.randbelow(MAX_SEED + 1) if variation else output.seed,
        )
        if not variation and (spec.width, spec.height) == (output.width, output.height):
            reason = f"Image {self.number} is already as large as Atelier makes images."
            await refuse(interaction, client.service.store, command, reason)
            return
        await interaction.response.defer(thinking=True)
        await queue_job(client, interaction, spec)


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
        client = _client(interaction)
        store = client.service.store
        try:
            job = await store.get(self.job_id)
        except JobNotFound:
            await refuse(interaction, store, "button.cancel", "That job is no longer stored.")
            return
        if job.user_id != interaction.user.id and not client.is_admin(interaction):
            reason = "Only the member who asked for this job (or an admin) can cancel it."
            await refuse(interaction, store, "button.cancel", reason)
            return
        if await client.service.cancel(job.id, interaction.user.id):
            await interaction.response.send_message(
                f"🛑 Cancelling job `{job.id}`.", ephemeral=True
            )
        else:
            await refuse(interaction, store, "button.cancel", f"Job `{job.id}` already finished.")


def progress_view(job_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view


def result_view(job: Job) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for action in _ACTIONS:
        for number in range(1, len(job.outputs) + 1):
            view.add_item(ImageButton(action, job.id, number))
    return view
