"""/imagine: check the input, journal it, defer, save attachments, queue the job.

Before the deferral the command is written to the journal (bot.store.commands),
one short insert; everything slow (downloads, decoding) comes after it. A bot
killed at any instant after Discord shows "thinking" completes the command at
its next start (`replay_pending`), through the same `_complete`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from engine.protocol import (
    MAX_CONTROL_SCALE,
    MAX_IMAGES_PER_JOB,
    MAX_SEED,
    MAX_STEPS,
    MIN_STRENGTH,
    SAMPLER_NAMES,
    ControlType,
)

from ...jobs.download import download_attachments
from ...jobs.inputs import ACCEPTED, save_inputs
from ...jobs.spec import (
    ASPECTS,
    MAX_TYPED_CHARS,
    BadInput,
    InputImage,
    Inputs,
    JobSpec,
    Options,
    build_spec,
    parse_prompt_flags,
)
from ...moderation.service import DEFAULTS, NEGATIVE, PROMPT, STYLE
from ...store.jobs import Requester
from ...store.models import ReceivedCommand
from ..common import (
    Followup,
    Services,
    actor_of_requester,
    journal_then_defer,
    refuse,
    requester_from_journal,
    requester_of,
    settled_on_error,
)
from ..queueing import queue_job

log = logging.getLogger(__name__)

COMMAND = "imagine"


@dataclass(frozen=True)
class AttachmentRef:
    """An attachment as Discord described it: enough to check it and fetch it later."""

    url: str
    size: int
    width: int | None
    height: int | None
    content_type: str | None

    @classmethod
    def of(cls, attachment: discord.Attachment) -> AttachmentRef:
        return cls(
            attachment.url, attachment.size, attachment.width, attachment.height,
            attachment.content_type,
        )  # fmt: skip


@dataclass(frozen=True)
class Ticket:
    """One /imagine as journaled: who asked, the options as given, the attachments."""

    requester: Requester
    token: str
    options: dict[str, Any]
    attachments: dict[str, AttachmentRef]

    def journal_options(self) -> dict[str, Any]:
        return {
            "given": self.options,
            "attachments": {role: vars(ref) for role, ref in self.attachments.items()},
        }

    @classmethod
    def from_journal(cls, row: ReceivedCommand) -> Ticket:
        attachments = {
            role: AttachmentRef(**ref) for role, ref in row.options["attachments"].items()
        }
        return cls(requester_from_journal(row), row.token or "", row.options["given"], attachments)


def _declared_inputs(attachments: dict[str, AttachmentRef], max_bytes: int) -> Inputs:
    """Inputs as Discord describes the attachments, to refuse before downloading anything."""
    declared = {}
    for role, attachment in attachments.items():
        if attachment.size > max_bytes:
            raise BadInput(
                f"The `{role}` attachment is {attachment.size / 2**20:.1f} MB;"
                f" the limit is {max_bytes / 2**20:g} MB."
            )
        is_image = (attachment.content_type or "").startswith("image/")
        if not is_image or not attachment.width or not attachment.height:
            raise BadInput(f"The `{role}` attachment is not an image; please attach {ACCEPTED}.")
        declared[role] = InputImage("", attachment.width, attachment.height)
    return Inputs(
        image=declared.get("image"), mask=declared.get("mask"), control=declared.get("control")
    )


def _styled(prompt: str) -> bool:
    """Whether the prompt applies a `--style` preset (whose words the job then uses)."""
    try:
        return parse_prompt_flags(prompt).style is not None
    except BadInput:
        return False


class ImagineCog(commands.Cog, name="Imagine"):
    """/imagine: the member's way in."""

    def __init__(self, bot: commands.Bot, services: Services) -> None:
        self.bot = bot
        self.services = services

    @app_commands.command(name="imagine", description="Make images from a text prompt")
    @app_commands.describe(
        prompt="What to draw. Flags work too: --ar 16:9 --seed 42 --no text",
        negative="What to keep out of the image",
        count=f"How many images (1-{MAX_IMAGES_PER_JOB})",
        seed="Seed of the first image; image n uses seed + n - 1",
        steps="Denoising steps (more is slower, often finer)",
        cfg="How closely to follow the prompt (about 4-12)",
        aspect="Shape of the image (default: the attached image's shape, else square)",
        model="Which model to use",
        sampler="Sampler, named as in other Stable Diffusion tools",
        image="Start from this image (image-to-image)",
        mask="With image: white = repaint, black = keep (inpainting)",
        strength=f"With image: how much to change it ({MIN_STRENGTH:g}-1.0)",
        control="A sketch or photo the composition follows (ControlNet)",
        control_type="How to read the control image (default canny)",
        control_scale=f"How strongly to follow the control image (0-{MAX_CONTROL_SCALE:g})",
    )
    @app_commands.choices(
        aspect=[app_commands.Choice(name=a, value=a) for a in ASPECTS],
        sampler=[app_commands.Choice(name=n, value=n) for n in SAMPLER_NAMES],
        control_type=[app_commands.Choice(name=f"{t.value}", value=t.value) for t in ControlType],
    )
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: str,
        negative: str | None = None,
        count: app_commands.Range[int, 1, MAX_IMAGES_PER_JOB] | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        steps: app_commands.Range[int, 1, MAX_STEPS] | None = None,
        cfg: app_commands.Range[float, 0.0, 30.0] | None = None,
        aspect: str | None = None,
        model: str | None = None,
        sampler: str | None = None,
        image: discord.Attachment | None = None,
        mask: discord.Attachment | None = None,
        strength: app_commands.Range[float, MIN_STRENGTH, 1.0] | None = None,
        control: discord.Attachment | None = None,
        control_type: str | None = None,
        control_scale: app_commands.Range[float, 0.0, MAX_CONTROL_SCALE] | None = None,
    ) -> None:
        given = {
            "prompt": prompt, "negative": negative, "count": count, "seed": seed,
            "steps": steps, "cfg": cfg, "aspect": aspect, "model": model, "sampler": sampler,
            "strength": strength, "control_type": control_type, "control_scale": control_scale,
        }  # fmt: skip
        attachments = {
            role: AttachmentRef.of(attachment)
            for role, attachment in (("image", image), ("mask", mask), ("control", control))
            if attachment is not None
        }
        requester = requester_of(interaction)
        ticket = Ticket(requester, interaction.token, given, attachments)
        limited = self.services.moderation.rate(requester.user_id, requester.guild_id)
        refusal = limited.message() if limited is not None else await self._check(ticket)
        if refusal is not None:
            await refuse(interaction, self.services.store, COMMAND, refusal)
            return
        journaled = await journal_then_defer(
            self.services, interaction, COMMAND, ticket.journal_options()
        )
        await self._complete(Ticket(journaled, ticket.token, given, attachments))

    async def replay_pending(self) -> None:
        """At start: complete every /imagine acknowledged by a previous run but not handled."""
        for row in await self.services.commands.pending():
            if row.command == COMMAND:
                log.info("completing /imagine %s received before the restart", row.interaction_id)
                async with settled_on_error(self.services, row):
                    await self._complete(Ticket.from_journal(row))

    async def _check(self, ticket: Ticket) -> str | None:
        """What needs no download: the member, the words, the options; a refusal or None.

        Every text the job will use is screened against the blocklist: what the
        member typed, their own default negative prompt, and a style's additions.
        """
        services = self.services
        requester = ticket.requester
        banned = await services.users.ban_reason(requester.user_id)
        if banned is not None:
            return f"You cannot use this bot: {banned}"
        paused = await services.moderation.paused(requester.user_id)
        if paused is not None:
            return paused
        given = ticket.options
        who = actor_of_requester(requester)
        typed = [(PROMPT, given["prompt"]), (NEGATIVE, given["negative"])]
        if sum(len(text or "") for _, text in typed) <= 2 * MAX_TYPED_CHARS:  # else refused below
            blocked = await services.moderation.screen(who, typed, COMMAND)
            if blocked is not None:
                return blocked.message
        defaults = await services.users.defaults(requester.user_id)
        try:
            spec = self._build(given, _declared_inputs(ticket.attachments, self._max_bytes),
                               defaults)  # fmt: skip
        except BadInput as error:
            return str(error)
        added = [
            (DEFAULTS, str(defaults.get("negative_prompt") or "")),
            (STYLE if _styled(given["prompt"]) else PROMPT,
             f"{spec.prompt}\n{spec.negative_prompt}"),
        ]  # fmt: skip
        blocked = await services.moderation.screen(who, added, COMMAND)
        return None if blocked is None else blocked.message

    def _build(self, given: dict[str, Any], inputs: Inputs, defaults: dict[str, Any]) -> JobSpec:
        services = self.services
        return build_spec(
            self._options(given), services.jobs.models, services.jobs.default_model, inputs,
            defaults, services.config.styles,
        )  # fmt: skip

    async def _complete(self, ticket: Ticket) -> None:
        """After the deferral: check again, fetch and check attachments, queue, answer."""
        services = self.services
        reply = Followup(self.bot, ticket.token)
        requester = ticket.requester
        refusal = await self._check(ticket)
        inputs = Inputs()
        if refusal is None:
            try:
                inputs = await self._save_attachments(ticket.attachments)
                spec = self._build(
                    ticket.options, inputs, await services.users.defaults(requester.user_id)
                )
            except BadInput as error:
                refusal = str(error)
        if refusal is not None:
            await reply.refuse(refusal)
            await services.store.record_refusal(
                f"{COMMAND}.refused", requester.user_id, requester.guild_id,
                requester.channel_id, refusal,
            )  # fmt: skip
            if requester.command_id is not None:
                await services.commands.settle(requester.command_id, f"refused: {refusal}")
            return
        if await queue_job(services, requester, spec, reply) and inputs.notices:
            await reply.notice("\n".join(inputs.notices))

    async def _save_attachments(self, attachments: dict[str, AttachmentRef]) -> Inputs:
        if not attachments:
            return Inputs()
        storage = self.services.config.storage
        urls = {role: ref.url for role, ref in attachments.items()}
        data = await download_attachments(urls, self._max_bytes)
        folder = storage.data_dir / "inputs" / secrets.token_hex(8)
        return await asyncio.to_thread(save_inputs, data, folder, storage.data_dir, self._max_bytes)

    @property
    def _max_bytes(self) -> int:
        return int(self.services.config.generation.max_attachment_mb * 2**20)

    @staticmethod
    def _options(given: dict[str, Any]) -> Options:
        control_type = given["control_type"]
        try:
            kind = ControlType(control_type) if control_type else None
        except ValueError:
            raise BadInput(f"Control type `{control_type}` is not one of the choices.") from None
        return Options(
            prompt=given["prompt"], negative_prompt=given["negative"], count=given["count"],
            seed=given["seed"], steps=given["steps"], cfg=given["cfg"], aspect=given["aspect"],
            model=given["model"], sampler=given["sampler"], strength=given["strength"],
            control_type=kind, control_scale=given["control_scale"],
        )  # fmt: skip

    @imagine.autocomplete("model")
    async def model_names(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return [
            app_commands.Choice(name=name, value=name)
            for name in sorted(self.services.config.models)
            if current.lower() in name.lower()
        ][:25]
