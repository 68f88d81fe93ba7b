"""The Jobs cog: the buttons under job messages, and /cancel, /queue, /history.

The buttons themselves are drawn by bot/discord/components.py and rebuilt from
their custom ids after a restart; their clicks land here. V, U, Vary (strong),
re-roll and remix read the stored files, never Discord's attachment links
(which expire). Anyone may re-roll, vary, upscale or remix another member's
result: the new job is theirs, charged to them. Only a job's owner or an
admin may cancel it or delete its images.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import discord
from discord import app_commands
from discord.ext import commands

from ...core.acting import JournaledDraft
from ...core.actions import (
    BY_NAME,
    MAX_CUSTOM_ZOOM,
    MIN_CUSTOM_ZOOM,
    Action,
    ActionName,
    Source,
    Words,
    journaled_commands,
)
from ...core.door import NO_INPUTS, Checked, Draft, Origin
from ...core.refusals import Refusal
from ...core.views import Job, JobState, Requester
from ...jobs.spec import JobSpec
from ..common import (
    Followup,
    Services,
    actor_of,
    admin_scope,
    cancel_and_answer,
    journal_then_defer,
    refuse,
    requester_from_journal,
    requester_of,
    settled_on_error,
    tell_privately,
)
from ..components import JOBS_COG, ActionButton, HistoryButton, history_view
from ..queueing import admit_and_show
from ..refusals import sentence

log = logging.getLogger(__name__)

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
    seed = ", ".join(str(output.seed) for output in job.outputs) or str(job.spec.seed)
    when = int(job.created_at.timestamp())
    prompt = clip(job.spec.prompt, 60).replace("`", "'")
    line = f"{STATE_ICONS.get(job.state, '•')} `{job.id}` <t:{when}:R> · seed {seed} · {prompt}"
    link = message_link(job)
    return f"{line} · [message]({link})" if link else line


def starts_in(eta_seconds: float) -> str:
    minutes = math.ceil(eta_seconds / 60)
    return "starts in under a minute" if minutes <= 1 else f"starts in about {minutes} min"


class RemixModal(discord.ui.Modal):
    """The form of an action that takes words: ✏️ Remix (the prompt and negative prompt
    of a job, to change and run again) and Custom Zoom (the same, and the factor)."""

    def __init__(
        self, cog: JobsCog, action: Action, job_id: str, number: int | None, spec: JobSpec
    ) -> None:
        title = action.button.label if action.button and action.button.label else "Remix"
        super().__init__(title=title, custom_id=f"atelier:{action.key}-form:{job_id}", timeout=1800)
        self.cog = cog
        self.action = action
        self.job_id = job_id
        self.number = number  # the image a per-image action (Custom Zoom) reads
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
        self.zoom: discord.ui.TextInput[RemixModal] | None = None
        if action.takes_zoom:
            self.zoom = discord.ui.TextInput(
                label=f"Zoom out by ({MIN_CUSTOM_ZOOM:g} to {MAX_CUSTOM_ZOOM:g})",
                default="1.5",
                max_length=6,
                custom_id="zoom",
            )
            self.add_item(self.zoom)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        words = Words(
            prompt=self.prompt.value,
            negative=self.negative.value,
            zoom=_factor(self.zoom.value) if self.zoom is not None else None,
        )
        await self.cog.words_submitted(interaction, self.action, self.job_id, self.number, words)


# Vary (Region) where the browser editor is not served (no [http] public_url).
NO_EDITOR = (
    "The Vary (Region) editor is not turned on here: download the image, paint white over"
    " the part to change and black elsewhere, then use `/imagine` with the image as `image`"
    " and your painting as `mask`."
)


def _factor(text: str) -> float | None:
    """A typed zoom factor; None when it is not a number (the action says what it takes)."""
    try:
        return float(text.strip().lower().removesuffix("x"))
    except ValueError:
        return None


class JobsCog(commands.Cog, name=JOBS_COG):
    """What the buttons under job messages do (they keep working across restarts), and
    the member's own queue: /cancel, /queue, /history."""

    def __init__(self, bot: commands.Bot, services: Services) -> None:
        self.bot = bot
        self.services = services

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(ActionButton, HistoryButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(ActionButton, HistoryButton)

    # -- the buttons under a job (bot.core.actions) -----------------------------------------

    async def act(
        self, interaction: discord.Interaction, action: Action, job_id: str, number: int | None
    ) -> None:
        """A click on a registered action's button."""
        member = requester_of(interaction)
        job = await self.services.acting.find(action, job_id)
        if isinstance(job, Refusal):
            await self._refuse(interaction, member, action.command, job)
            return
        if (refusal := self._allowed(interaction, action, job, member)) is not None:
            await self._refuse(interaction, member, action.command, refusal)
            return
        if action.name is ActionName.CANCEL:
            await cancel_and_answer(self.services, interaction, job, action.command, Origin.BUTTON)
            return
        if action.name is ActionName.DELETE:
            await self._delete(interaction, member, job)
            return
        source = await self.services.acting.source(action, job, number)
        if isinstance(source, Refusal):
            await self._refuse(interaction, member, action.command, source)
            return
        if action.takes_mask:  # the browser editor asks for the region and the words
            await self._editor_link(interaction, member, source)
            return
        if action.takes_words:  # the form asks for them; see words_submitted
            await interaction.response.send_modal(
                RemixModal(self, action, job.id, number, source.spec)
            )
            return
        await self._make(interaction, member, self.services.acting.draft(action, source))

    async def _editor_link(
        self, interaction: discord.Interaction, member: Requester, source: Source
    ) -> None:
        """Vary (Region): a private link to the browser editor, for this member and image;
        where the editor is not served, how to do the same with /imagine."""
        editor = self.services.core.editor
        command = BY_NAME[ActionName.VARY_REGION].command
        if not editor.served:
            await interaction.response.send_message(NO_EDITOR, ephemeral=True)
            await self.services.audit.record_command(actor_of(interaction), command, "no editor")
            return
        if (barred := await self.services.door.barred(member.user_id)) is not None:
            await self._refuse(interaction, member, command, barred)
            return
        if await self._private(interaction):  # the new image follows the private result
            member = dataclasses.replace(member, channel_id=None)
        assert source.number is not None
        link = await editor.issue(
            member, source.job_id, source.number, nsfw_channel=member.nsfw_channel
        )
        minutes = self.services.config.http.editor_link_minutes
        await interaction.response.send_message(
            f"🖌️ [Open the editor]({link}) to mark the region to change and edit the prompt."
            f" The link is yours alone, works once and expires in {minutes:g} minutes;"
            " the new image will appear here as a reply to this one.",
            ephemeral=True,
        )

    async def words_submitted(
        self,
        interaction: discord.Interaction,
        action: Action,
        job_id: str,
        number: int | None,
        words: Words,
    ) -> None:
        """The form of an action that takes words (✏️ Remix) sent."""
        member = requester_of(interaction)
        acting = self.services.acting
        job = await acting.find(action, job_id)
        source = job if isinstance(job, Refusal) else await acting.source(action, job, number)
        if isinstance(source, Refusal):
            await self._refuse(interaction, member, action.command, source, Origin.MODAL)
            return
        draft = acting.draft(action, source, words)
        await self._make(interaction, member, draft, Origin.MODAL)

    async def _make(
        self,
        interaction: discord.Interaction,
        member: Requester,
        draft: Draft,
        origin: Origin = Origin.BUTTON,
    ) -> None:
        """The door's checks before the deferral; then journal the spec, defer (privately
        for a private result or member) and queue exactly what was checked."""
        checked = await self.services.door.check(member, draft, NO_INPUTS, origin)
        if isinstance(checked, Refusal):
            await self._refuse(interaction, member, draft.command, checked, origin)
            return
        (spec,) = checked.specs
        private = await self._private(interaction)
        options = {"spec": spec.model_dump(mode="json"), "private": private}
        requester = await journal_then_defer(
            self.services, interaction, draft.command, options, ephemeral=private
        )
        await self._queue(
            requester,
            JournaledDraft(draft.command, spec),
            Followup.of(interaction, private),
            origin,
            private,
        )

    async def _queue(
        self,
        requester: Requester,
        draft: JournaledDraft,
        reply: Followup,
        origin: Origin,
        private: bool,
    ) -> None:
        if private:  # no channel: a private result goes by DM once its token expires
            requester = dataclasses.replace(requester, channel_id=None)
        checked = Checked({}, [draft.spec])
        await admit_and_show(self.services, requester, draft, NO_INPUTS, origin, checked, reply)

    async def _private(self, interaction: discord.Interaction) -> bool:
        """A click on a private (ephemeral) result answers privately, as does a member
        whose setting says so."""
        message = interaction.message
        if message is not None and message.flags.ephemeral:
            return True
        return bool((await self.services.users.defaults(interaction.user.id)).get("private"))

    async def _refuse(
        self,
        interaction: discord.Interaction,
        member: Requester,
        command: str,
        refusal: Refusal,
        origin: Origin = Origin.BUTTON,
    ) -> None:
        """Tell the member privately (first, within Discord's 3 s), then audit."""
        await tell_privately(interaction, sentence(refusal))
        await self.services.door.refused(member, command, origin, refusal)

    async def replay_pending(self) -> None:
        """At start: queue every click acknowledged by a previous run but not handled: the
        journal row of a registered action that makes a job holds the spec to queue."""
        replayed = journaled_commands()
        for row in await self.services.commands.pending():
            if row.command not in replayed:
                continue
            log.info(
                "completing %s %s received before the restart", row.command, row.interaction_id
            )
            async with settled_on_error(self.services, row):
                draft = JournaledDraft(row.command, JobSpec.model_validate(row.options["spec"]))
                private = bool(row.options.get("private"))
                reply = Followup(self.bot, row.token or "", ephemeral=private)
                requester = requester_from_journal(row)
                await self._queue(requester, draft, reply, Origin.BUTTON, private)

    # -- actions for the job's owner --------------------------------------------------------

    def _allowed(
        self, interaction: discord.Interaction, action: Action, job: Job, member: Requester
    ) -> Refusal | None:
        """The core's rule, whose admins here are the global admins and the managers of
        the server the job was made in."""
        scope = admin_scope(self.bot, self.services.config, interaction)
        return self.services.acting.allowed(
            action, job, member, admin=scope.covers_job(job.guild_id)
        )

    async def _delete(self, interaction: discord.Interaction, member: Requester, job: Job) -> None:
        """🗑️: delete the result message and the job's stored images. The job row stays
        (its usage was charged), its outputs and files go, audited."""
        await interaction.response.defer()  # a deferred update of the clicked message
        paths = await self.services.acting.delete_images(job, member)
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

    async def _cancel(self, interaction: discord.Interaction, job: Job, command: str) -> None:
        member = requester_of(interaction)
        cancel = BY_NAME[ActionName.CANCEL]
        if (refusal := self._allowed(interaction, cancel, job, member)) is not None:
            await tell_privately(interaction, sentence(refusal))
            await self.services.door.refused(member, command, Origin.SLASH, refusal)
            return
        await cancel_and_answer(self.services, interaction, job, command, Origin.SLASH)

    # -- commands -------------------------------------------------------------------------

    @app_commands.command(name="cancel", description="Cancel your queued or running job")
    @app_commands.describe(job="Which job (default: your newest queued or running one)")
    async def cancel_command(
        self, interaction: discord.Interaction, job: str | None = None
    ) -> None:
        store, queries = self.services.store, self.services.core.queries
        if job is None:
            mine = await queries.unfinished_of(interaction.user.id)
            if not mine:
                await refuse(interaction, store, "cancel", "You have no queued or running job.")
                return
            await self._cancel(interaction, mine[0], "cancel")
            return
        found = await queries.job(job.strip().strip("`"))
        if found is None:
            await refuse(interaction, store, "cancel", f"There is no job `{clip(job, 20)}`.")
            return
        await self._cancel(interaction, found, "cancel")

    @cancel_command.autocomplete("job")
    async def cancellable(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        mine = await self.services.core.queries.unfinished_of(interaction.user.id)
        return [
            app_commands.Choice(
                name=clip(f"{job.id} · {job.state} · {job.spec.prompt}", 100),
                value=job.id,
            )
            for job in mine
            if current.lower() in job.id
        ][:25]

    @app_commands.command(name="recreate", description="Make a job again from its recipe")
    @app_commands.describe(job="The job's id (from its message, /history or the image's PNG)")
    async def recreate(self, interaction: discord.Interaction, job: str) -> None:
        """Any ended job (another member's too: the new one is yours), with its seeds and
        settings, so the same device makes the same images."""
        action = BY_NAME[ActionName.RECREATE]
        member = requester_of(interaction)
        acting = self.services.acting
        found = await acting.find(action, job.strip().strip("`"))
        source = found if isinstance(found, Refusal) else await acting.source(action, found, None)
        if isinstance(source, Refusal):
            await self._refuse(interaction, member, action.command, source, Origin.SLASH)
            return
        await self._make(interaction, member, acting.draft(action, source), Origin.SLASH)

    @app_commands.command(name="queue", description="Your jobs in the queue, and how busy it is")
    async def queue(self, interaction: discord.Interaction) -> None:
        services = self.services
        await services.audit.record_command(actor_of(interaction), "queue")
        view = await services.core.queries.queue(interaction.user.id)
        lines = []
        for queued in view.mine:
            job = queued.job
            prompt = clip(job.spec.prompt, 50).replace("`", "'")
            if job.state is JobState.RUNNING:
                lines.append(f"🎨 `{job.id}` running · {prompt}")
                continue
            place = queued.place
            where = (
                "starting"
                if place is None
                else f"position {place.position}, {starts_in(place.eta_seconds)}"
            )
            lines.append(f"⏳ `{job.id}` {where} · {prompt}")
        text = "**Your jobs**\n" + ("\n".join(lines) if lines else "none queued or running")
        text += (
            f"\n**Everyone else**: {view.others_waiting} waiting and {view.others_running}"
            f" running, from {view.other_members} other member(s)."
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
        page = await self.services.core.queries.history(user_id, size, offset)
        jobs, total = page.jobs, page.total
        if not jobs:
            return "You have no jobs yet: try `/imagine`.", discord.ui.View()
        first, last = offset + 1, offset + len(jobs)
        lines = [f"**Your jobs {first}-{last} of {total}**", *map(history_line, jobs)]
        return "\n".join(lines)[:2000], history_view(offset, size, total)
