"""The Jobs cog: what the buttons under job messages do (V, U, Cancel).

The buttons themselves are drawn by bot/discord/components.py and rebuilt from
their custom ids after a restart; their clicks land here. V and U read the
stored output file, never Discord's attachment link (which expires).
"""

from __future__ import annotations

import logging
import secrets

import discord
from discord.ext import commands

from engine.protocol import MAX_SEED, Mode

from ...jobs.spec import InputImage, JobSpec, derived_spec
from ...moderation.service import SOURCE
from ...store.jobs import JobNotFound
from ...store.models import JobState
from ..common import (
    Followup,
    Services,
    actor_of,
    is_admin,
    journal_then_defer,
    refuse,
    requester_from_journal,
    settled_on_error,
)
from ..components import JOBS_COG, CancelButton, ImageButton
from ..queueing import queue_job

log = logging.getLogger(__name__)

_ACTIONS = {"v": Mode.VARIATION, "u": Mode.UPSCALE}
DERIVED_COMMANDS = frozenset(f"button.{mode}" for mode in _ACTIONS.values())


class JobsCog(commands.Cog, name=JOBS_COG):
    """What the buttons under job messages do; they keep working across restarts."""

    def __init__(self, bot: commands.Bot, services: Services) -> None:
        self.bot = bot
        self.services = services

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(ImageButton, CancelButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(ImageButton, CancelButton)

    async def derive(
        self, interaction: discord.Interaction, action: str, job_id: str, number: int
    ) -> None:
        """V or U: a variation or an upscale of image `number` of `job_id`."""
        store = self.services.store
        mode = _ACTIONS[action]
        command = f"button.{mode}"
        try:
            job = await store.get(job_id)
        except JobNotFound:
            await refuse(interaction, store, command, "That job is no longer stored.")
            return
        if job.state is JobState.SUCCEEDED and not job.outputs:  # forgotten or expired
            reason = f"The images of job `{job.id}` are no longer stored; they cannot be reused."
            await refuse(interaction, store, command, reason)
            return
        if job.state is not JobState.SUCCEEDED or number > len(job.outputs):
            await refuse(interaction, store, command, "That image does not exist.")
            return
        refusal = await self._moderate(interaction, JobSpec.model_validate(job.spec), command)
        if refusal is not None:
            await refuse(interaction, store, command, refusal)
            return
        output = job.outputs[number - 1]
        if not self.services.jobs.output_path(output.path).is_file():
            reason = f"Image {number} of job `{job.id}` is no longer stored; it cannot be reused."
            await refuse(interaction, store, command, reason)
            return
        generation = self.services.config.generation
        variation = mode is Mode.VARIATION
        spec = derived_spec(
            JobSpec.model_validate(job.spec),
            (job.id, number),
            InputImage(output.path, output.width, output.height),
            mode,
            generation.variation_strength if variation else generation.upscale_strength,
            # A variation is a new roll; an upscale keeps the image's own seed.
            secrets.randbelow(MAX_SEED + 1) if variation else output.seed,
        )
        if not variation and (spec.width, spec.height) == (output.width, output.height):
            reason = f"Image {number} is already as large as Atelier makes images."
            await refuse(interaction, store, command, reason)
            return
        requester = await journal_then_defer(
            self.services, interaction, command, {"spec": spec.model_dump(mode="json")}
        )
        await queue_job(self.services, requester, spec, Followup.of(interaction))

    async def _moderate(
        self, interaction: discord.Interaction, source: JobSpec, command: str
    ) -> str | None:
        """The rate limits, a timed pause, and the source's words against today's blocklist."""
        moderation = self.services.moderation
        limited = moderation.rate(interaction.user.id, interaction.guild_id)
        if limited is not None:
            return limited.message()
        paused = await moderation.paused(interaction.user.id)
        if paused is not None:
            return paused
        text = f"{source.prompt}\n{source.negative_prompt}"
        blocked = await moderation.screen(actor_of(interaction), [(SOURCE, text)], command)
        return None if blocked is None else blocked.message

    async def replay_pending(self) -> None:
        """At start: queue every V/U click acknowledged by a previous run but not handled."""
        for row in await self.services.commands.pending():
            if row.command in DERIVED_COMMANDS:
                log.info("completing %s %s received before the restart", row.command,
                         row.interaction_id)  # fmt: skip
                async with settled_on_error(self.services, row):
                    spec = JobSpec.model_validate(row.options["spec"])
                    reply = Followup(self.bot, row.token or "")
                    await queue_job(self.services, requester_from_journal(row), spec, reply)

    async def cancel(self, interaction: discord.Interaction, job_id: str) -> None:
        """Cancel a queued or running job: its owner's or an admin's click only."""
        store = self.services.store
        try:
            job = await store.get(job_id)
        except JobNotFound:
            await refuse(interaction, store, "button.cancel", "That job is no longer stored.")
            return
        if job.user_id != interaction.user.id and not is_admin(
            self.services.config.admin, interaction
        ):
            reason = "Only the member who asked for this job (or an admin) can cancel it."
            await refuse(interaction, store, "button.cancel", reason)
            return
        if await self.services.jobs.cancel(job.id, interaction.user.id):
            await interaction.response.send_message(
                f"🛑 Cancelling job `{job.id}`.", ephemeral=True
            )
        else:
            await refuse(interaction, store, "button.cancel", f"Job `{job.id}` already finished.")
