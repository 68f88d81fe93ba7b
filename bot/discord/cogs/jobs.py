"""The Jobs cog: the buttons under job messages, and /cancel, /queue, /history.

The buttons themselves are drawn by bot/discord/components.py and rebuilt from
their custom ids after a restart; their clicks land here. V, U, Vary (strong),
re-roll and remix read the stored files, never Discord's attachment links
(which expire). Anyone may re-roll, vary, upscale or remix another member's
result: the new job is theirs, charged to them. Only a job's owner or an
admin may cancel it or delete its images.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import secrets
import shutil

import discord
from discord import app_commands
from discord.ext import commands

from engine.protocol import MAX_SEED, Mode

from ...jobs.spec import (
    BadInput,
    InputImage,
    JobSpec,
    derived_spec,
    input_paths,
    remixed_spec,
    rerolled_spec,
)
from ...moderation.service import ScreenedText, TextKind
from ...store.jobs import JobNotFound
from ...store.models import Job, JobState
from ..common import (
    DoorRefusal,
    Followup,
    Services,
    actor_of,
    admin_scope,
    cancel_and_answer,
    journal_then_defer,
    refuse,
    requester_from_journal,
    settled_on_error,
)
from ..components import (
    JOBS_COG,
    CancelButton,
    HistoryButton,
    ImageButton,
    JobButton,
    history_view,
)
from ..queueing import queue_job

log = logging.getLogger(__name__)

_MODES = {"v": Mode.VARIATION, "s": Mode.VARIATION, "u": Mode.UPSCALE}
# Journaled clicks that queue a job; their journal row holds the spec to queue.
DERIVED_COMMANDS = frozenset(
    {"button.variation", "button.upscale", "button.reroll", "button.remix"}
)
HISTORY_PAGE = 10
STATE_ICONS = {
    JobState.QUEUED: "⏳",
    JobState.RUNNING: "🎨",
    JobState.SUCCEEDED: "✅",
    JobState.FAILED: "❌",
    JobState.CANCELLED: "🛑",
    JobState.BLOCKED: "🚫",
}


def clip(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def message_link(job: Job) -> str | None:
    """A link to the job's message in its server channel (none for DMs and private replies)."""
    if job.guild_id is None or job.channel_id is None or job.message_id is None:
        return None
    return f"https://discord.com/channels/{job.guild_id}/{job.channel_id}/{job.message_id}"


def history_line(job: Job) -> str:
    spec = job.spec
    seed = ", ".join(str(output.seed) for output in job.outputs) or str(spec.get("seed", "?"))
    when = int(job.created_at.timestamp())
    prompt = clip(str(spec.get("prompt", "")), 60).replace("`", "'")
    line = f"{STATE_ICONS.get(job.state, '•')} `{job.id}` <t:{when}:R> · seed {seed} · {prompt}"
    link = message_link(job)
    return f"{line} · [message]({link})" if link else line


def starts_in(eta_seconds: float) -> str:
    minutes = math.ceil(eta_seconds / 60)
    return "starts in under a minute" if minutes <= 1 else f"starts in about {minutes} min"


def _source(job: Job) -> ScreenedText:
    """The words of a job a click reuses, to screen against today's blocklist."""
    spec = job.spec
    words = f"{spec.get('prompt', '')}\n{spec.get('negative_prompt', '')}"
    return ScreenedText(TextKind.SOURCE, words)


class RemixModal(discord.ui.Modal):
    """✏️ Remix: the prompt and negative prompt of a job, to change and run again."""

    def __init__(self, cog: JobsCog, job_id: str, spec: JobSpec) -> None:
        super().__init__(title="Remix", custom_id=f"atelier:remix-form:{job_id}", timeout=1800)
        self.cog = cog
        self.job_id = job_id
        self.prompt: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
            label="Prompt (flags work: --seed, --cfg, --no …)",
            style=discord.TextStyle.paragraph,
            default=spec.prompt,
            max_length=4000,
            custom_id="prompt",
        )
        self.negative: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
            label="Negative prompt",
            style=discord.TextStyle.paragraph,
            default=spec.negative_prompt or None,
            required=False,
            max_length=1500,
            custom_id="negative",
        )
        self.add_item(self.prompt)
        self.add_item(self.negative)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self.cog.remix_submitted(
            interaction, self.job_id, self.prompt.value, self.negative.value
        )


class JobsCog(commands.Cog, name=JOBS_COG):
    """What the buttons under job messages do (they keep working across restarts), and
    the member's own queue: /cancel, /queue, /history."""

    def __init__(self, bot: commands.Bot, services: Services) -> None:
        self.bot = bot
        self.services = services

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(ImageButton, CancelButton, JobButton, HistoryButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(ImageButton, CancelButton, JobButton, HistoryButton)

    # -- buttons that make a new job -------------------------------------------------------

    async def derive(
        self, interaction: discord.Interaction, action: str, job_id: str, number: int
    ) -> None:
        """V, Vary (strong) or U: a variation or an upscale of image `number` of `job_id`."""
        store = self.services.store
        mode = _MODES[action]
        command = f"button.{mode}"
        job = await self._finished_job(interaction, command, job_id)
        if job is None:
            return
        if not job.outputs:  # forgotten or expired
            reason = f"The images of job `{job.id}` are no longer stored; they cannot be reused."
            await refuse(interaction, store, command, reason)
            return
        if number > len(job.outputs):
            await refuse(interaction, store, command, "That image does not exist any more.")
            return
        output = job.outputs[number - 1]
        if not self.services.jobs.output_path(output.path).is_file():
            reason = f"Image {number} of job `{job.id}` is no longer stored; it cannot be reused."
            await refuse(interaction, store, command, reason)
            return
        generation = self.services.config.generation
        strength = {
            "v": generation.variation_strength,
            "s": generation.strong_variation_strength,
            "u": generation.upscale_strength,
        }[action]
        spec = derived_spec(
            JobSpec.model_validate(job.spec),
            (job.id, number),
            InputImage(output.path, output.width, output.height),
            mode,
            strength,
            # A variation is a new roll; an upscale keeps the image's own seed.
            secrets.randbelow(MAX_SEED + 1) if mode is Mode.VARIATION else output.seed,
        )
        if mode is Mode.UPSCALE and (spec.width, spec.height) == (output.width, output.height):
            reason = f"Image {number} is already as large as Atelier makes images."
            await refuse(interaction, store, command, reason)
            return
        if await self._refused(interaction, command, [_source(job)]):
            return
        await self._queue_new(interaction, command, spec)

    async def reroll(self, interaction: discord.Interaction, job_id: str) -> None:
        """🔄: the same job again with a new seed, as the clicking member's own job."""
        job = await self._finished_job(interaction, "button.reroll", job_id)
        if job is None:
            return
        spec = JobSpec.model_validate(job.spec)
        if await self._inputs_gone(interaction, "button.reroll", spec):
            return
        if await self._refused(interaction, "button.reroll", [_source(job)]):
            return
        spec = rerolled_spec(spec, secrets.randbelow(MAX_SEED + 1))
        await self._queue_new(interaction, "button.reroll", spec)

    async def remix(self, interaction: discord.Interaction, job_id: str) -> None:
        """✏️: a modal with the job's prompt and negative prompt; see remix_submitted."""
        job = await self._finished_job(interaction, "button.remix", job_id)
        if job is None:
            return
        spec = JobSpec.model_validate(job.spec)
        if await self._inputs_gone(interaction, "button.remix", spec):
            return
        await interaction.response.send_modal(RemixModal(self, job.id, spec))

    async def remix_submitted(
        self, interaction: discord.Interaction, job_id: str, prompt: str, negative: str
    ) -> None:
        """The remix modal sent: the job again with the new words and the same seeds."""
        services = self.services
        job = await self._finished_job(interaction, "button.remix", job_id)
        if job is None:
            return
        banned = await services.users.ban_reason(interaction.user.id)
        if banned is not None:
            reason = f"You cannot use this bot: {banned}"
            await refuse(interaction, services.store, "button.remix", reason, kind="banned")
            return
        try:
            spec = remixed_spec(
                JobSpec.model_validate(job.spec),
                prompt,
                negative,
                services.jobs.models,
                services.config.styles,
            )
        except BadInput as error:
            await refuse(interaction, services.store, "button.remix", str(error))
            return
        # What the member typed first; then what a --style added (all of it read again).
        texts = [
            ScreenedText(TextKind.PROMPT, prompt),
            ScreenedText(TextKind.NEGATIVE, negative),
            ScreenedText(TextKind.STYLE, f"{spec.prompt}\n{spec.negative_prompt}"),
        ]
        if await self._refused(interaction, "button.remix", texts):
            return
        await self._queue_new(interaction, "button.remix", spec)

    async def _finished_job(
        self, interaction: discord.Interaction, command: str, job_id: str
    ) -> Job | None:
        """The succeeded job a button names, or None once the member was told why not."""
        store = self.services.store
        try:
            job = await store.get(job_id)
        except JobNotFound:
            await refuse(interaction, store, command, "That job is no longer stored.")
            return None
        if job.state is not JobState.SUCCEEDED:
            await refuse(interaction, store, command, f"Job `{job.id}` has no images to reuse.")
            return None
        return job

    async def _inputs_gone(
        self, interaction: discord.Interaction, command: str, spec: JobSpec
    ) -> bool:
        """Whether an input image the job read is gone (refused and told if so)."""
        gone = [p for p in input_paths(spec) if not self.services.jobs.output_path(p).is_file()]
        if gone:
            reason = "The image this job started from is no longer stored; it cannot run again."
            await refuse(interaction, self.services.store, command, reason)
        return bool(gone)

    async def _queue_new(
        self, interaction: discord.Interaction, command: str, spec: JobSpec
    ) -> None:
        """Journal the click, defer (privately for a private result or member), queue."""
        private = await self._private(interaction)
        options = {"spec": spec.model_dump(mode="json"), "private": private}
        requester = await journal_then_defer(
            self.services, interaction, command, options, ephemeral=private
        )
        if private:  # no channel: a private result goes by DM once its token expires
            requester = dataclasses.replace(requester, channel_id=None)
        await queue_job(self.services, requester, spec, Followup.of(interaction, private))

    async def _private(self, interaction: discord.Interaction) -> bool:
        """A click on a private (ephemeral) result answers privately, as does a member
        whose setting says so."""
        message = interaction.message
        if message is not None and message.flags.ephemeral:
            return True
        return bool((await self.services.users.defaults(interaction.user.id)).get("private"))

    async def _refused(
        self, interaction: discord.Interaction, command: str, texts: list[ScreenedText]
    ) -> bool:
        """Whether moderation refuses a new job from a click (the member is told why): the
        rate limits, a timed pause, and its words against today's blocklist."""
        moderation = self.services.moderation
        refusal: DoorRefusal | None = None
        if (limited := moderation.rate(interaction.user.id, interaction.guild_id)) is not None:
            refusal = DoorRefusal(limited.message(), "rate_limited")
        elif (paused := await moderation.paused(interaction.user.id)) is not None:
            refusal = DoorRefusal(paused, "paused")
        elif blocked := await moderation.screen(actor_of(interaction), texts, command):
            refusal = DoorRefusal(blocked.message, "moderation")
        if refusal is not None:
            await refuse(
                interaction, self.services.store, command, refusal.reason, kind=refusal.kind
            )
        return refusal is not None

    async def replay_pending(self) -> None:
        """At start: queue every click acknowledged by a previous run but not handled."""
        for row in await self.services.commands.pending():
            if row.command in DERIVED_COMMANDS:
                log.info(
                    "completing %s %s received before the restart", row.command, row.interaction_id
                )
                async with settled_on_error(self.services, row):
                    spec = JobSpec.model_validate(row.options["spec"])
                    private = bool(row.options.get("private"))
                    reply = Followup(self.bot, row.token or "", ephemeral=private)
                    requester = requester_from_journal(row)
                    if private:
                        requester = dataclasses.replace(requester, channel_id=None)
                    await queue_job(self.services, requester, spec, reply)

    # -- buttons for the owner ----------------------------------------------------------------

    def _owner_or_admin(self, interaction: discord.Interaction, job: Job) -> bool:
        """The job's owner, a global admin, or a manager of the server the job was made in."""
        if job.user_id == interaction.user.id:
            return True
        return admin_scope(self.bot, self.services.config, interaction).covers_job(job.guild_id)

    async def cancel(self, interaction: discord.Interaction, job_id: str) -> None:
        """Cancel a queued or running job: its owner's or an admin's click only."""
        store = self.services.store
        try:
            job = await store.get(job_id)
        except JobNotFound:
            await refuse(interaction, store, "button.cancel", "That job is no longer stored.")
            return
        await self._cancel(interaction, job, "button.cancel")

    async def _cancel(self, interaction: discord.Interaction, job: Job, command: str) -> None:
        store = self.services.store
        if not self._owner_or_admin(interaction, job):
            reason = "Only the member who asked for this job (or an admin) can cancel it."
            await refuse(interaction, store, command, reason)
            return
        await cancel_and_answer(self.services, interaction, job.id, command)

    async def delete(self, interaction: discord.Interaction, job_id: str) -> None:
        """🗑️: delete the result message and the job's stored images; owner or admin only.

        The job row stays (its usage was charged), its outputs and files go, audited.
        """
        store = self.services.store
        try:
            job = await store.get(job_id)
        except JobNotFound:
            await refuse(interaction, store, "button.delete", "That job is no longer stored.")
            return
        if not self._owner_or_admin(interaction, job):
            reason = "Only the member who made these images (or an admin) can delete them."
            await refuse(interaction, store, "button.delete", reason)
            return
        await interaction.response.defer()  # a deferred update of the clicked message
        paths = await store.delete_outputs(
            job.id, interaction.user.id, interaction.guild_id, interaction.channel_id
        )
        await asyncio.to_thread(self._remove_files, job.id, paths)
        log.info("job %s: %d image(s) deleted by user %d", job.id, len(paths), interaction.user.id)
        message = interaction.message
        try:
            if message is None or message.flags.ephemeral:
                await interaction.delete_original_response()
            else:
                await message.delete()
        except discord.HTTPException as error:
            log.info("job %s: could not delete its message (%s)", job.id, error)
        await interaction.followup.send(
            f"🗑️ Deleted job `{job.id}`'s message and its {len(paths)} stored image(s).",
            ephemeral=True,
        )

    def _remove_files(self, job_id: str, paths: list[str]) -> None:
        for relative in paths:
            self.services.jobs.output_path(relative).unlink(missing_ok=True)
        shutil.rmtree(self.services.jobs.output_path(f"images/{job_id}"), ignore_errors=True)

    # -- commands -------------------------------------------------------------------------

    @app_commands.command(name="cancel", description="Cancel your queued or running job")
    @app_commands.describe(job="Which job (default: your newest queued or running one)")
    async def cancel_command(
        self, interaction: discord.Interaction, job: str | None = None
    ) -> None:
        store = self.services.store
        if job is None:
            mine = await store.unfinished_of(interaction.user.id)
            if not mine:
                await refuse(interaction, store, "cancel", "You have no queued or running job.")
                return
            await self._cancel(interaction, mine[0], "cancel")
            return
        try:
            found = await store.get(job.strip().strip("`"))
        except JobNotFound:
            await refuse(interaction, store, "cancel", f"There is no job `{clip(job, 20)}`.")
            return
        await self._cancel(interaction, found, "cancel")

    @cancel_command.autocomplete("job")
    async def cancellable(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        mine = await self.services.store.unfinished_of(interaction.user.id)
        return [
            app_commands.Choice(
                name=clip(f"{job.id} · {job.state} · {job.spec.get('prompt', '')}", 100),
                value=job.id,
            )
            for job in mine
            if current.lower() in job.id
        ][:25]

    @app_commands.command(name="queue", description="Your jobs in the queue, and how busy it is")
    async def queue(self, interaction: discord.Interaction) -> None:
        services = self.services
        await services.audit.record_command(actor_of(interaction), "queue")
        everyone = await services.store.unfinished()
        me = interaction.user.id
        lines = []
        for job in sorted(everyone, key=lambda j: (j.state != JobState.RUNNING, j.created_at)):
            if job.user_id != me:
                continue
            prompt = clip(str(job.spec.get("prompt", "")), 50).replace("`", "'")
            if job.state is JobState.RUNNING:
                lines.append(f"🎨 `{job.id}` running · {prompt}")
                continue
            place = await services.jobs.queue_place(job.id)
            where = (
                "starting"
                if place is None
                else f"position {place.position}, {starts_in(place.eta_seconds)}"
            )
            lines.append(f"⏳ `{job.id}` {where} · {prompt}")
        others = [job for job in everyone if job.user_id != me]
        waiting = sum(job.state is JobState.QUEUED for job in others)
        running = len(others) - waiting
        members = len({job.user_id for job in others})
        text = "**Your jobs**\n" + ("\n".join(lines) if lines else "none queued or running")
        text += (
            f"\n**Everyone else**: {waiting} waiting and {running} running,"
            f" from {members} other member(s)."
        )
        await interaction.response.send_message(text, ephemeral=True)

    @app_commands.command(name="history", description="Your recent jobs, with links")
    @app_commands.describe(count=f"Jobs per page (default {HISTORY_PAGE})")
    async def history(
        self, interaction: discord.Interaction, count: app_commands.Range[int, 1, 25] = HISTORY_PAGE
    ) -> None:
        await self.services.audit.record_command(actor_of(interaction), "history")
        text, view = await self._history(interaction.user.id, 0, count)
        await interaction.response.send_message(text, view=view, ephemeral=True)

    async def history_page(self, interaction: discord.Interaction, offset: int, size: int) -> None:
        """◀ ▶ under /history: the clicking member's page at `offset`."""
        text, view = await self._history(interaction.user.id, offset, max(1, min(size, 25)))
        await interaction.response.edit_message(content=text, view=view)

    async def _history(self, user_id: int, offset: int, size: int) -> tuple[str, discord.ui.View]:
        jobs, total = await self.services.store.history(user_id, size, offset)
        if not jobs:
            return "You have no jobs yet: try `/imagine`.", discord.ui.View()
        first, last = offset + 1, offset + len(jobs)
        lines = [f"**Your jobs {first}-{last} of {total}**", *map(history_line, jobs)]
        return "\n".join(lines)[:2000], history_view(offset, size, total)
