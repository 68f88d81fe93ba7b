"""/imagine: check the input, defer, save attachments, queue the job, say where it stands."""

from __future__ import annotations

import asyncio
import secrets

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
    BadInput,
    InputImage,
    Inputs,
    Options,
    blocked_term,
    build_spec,
)
from ..common import Services, refuse
from ..queueing import queue_job


def _declared_inputs(attachments: dict[str, discord.Attachment], max_bytes: int) -> Inputs:
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


class ImagineCog(commands.Cog, name="Imagine"):
    """/imagine: the member's way in."""

    def __init__(self, services: Services) -> None:
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
        services = self.services
        service = services.jobs
        attachments = {
            role: attachment
            for role, attachment in (("image", image), ("mask", mask), ("control", control))
            if attachment is not None
        }
        max_bytes = int(services.config.generation.max_attachment_mb * 2**20)
        try:
            kind = ControlType(control_type) if control_type else None
        except ValueError:
            kind = None  # not one of the offered choices: reported below
        banned = await services.users.ban_reason(interaction.user.id)
        if banned is not None:
            await refuse(
                interaction, service.store, "imagine", f"You cannot use this bot: {banned}"
            )
            return
        terms = await services.guilds.blocked_terms(interaction.guild_id)
        blocked = blocked_term(f"{prompt} {negative or ''}", terms)
        if blocked is not None:
            reason = f"Your prompt contains `{blocked}`, which this server does not allow."
            await refuse(interaction, service.store, "imagine", reason, kind="moderation")
            return
        # The member's own defaults fill what this command leaves out.
        personal = await services.users.defaults(interaction.user.id)
        options = Options(
            prompt=prompt, negative_prompt=negative, count=count, seed=seed, steps=steps,
            cfg=cfg, aspect=aspect, model=model, sampler=sampler, strength=strength,
            control_type=kind, control_scale=control_scale,
        )  # fmt: skip
        try:
            if control_type and kind is None:
                raise BadInput(f"Control type `{control_type}` is not one of the choices.")
            # Everything that needs no download is checked before the deferral.
            build_spec(
                options, service.models, service.default_model,
                _declared_inputs(attachments, max_bytes), personal,
            )  # fmt: skip
        except BadInput as error:
            await refuse(interaction, service.store, "imagine", str(error))
            return
        # Defer before downloading or touching the database: Discord allows 3 s.
        await interaction.response.defer(thinking=True)
        try:
            inputs = Inputs()
            if attachments:
                urls = {role: attachment.url for role, attachment in attachments.items()}
                data = await download_attachments(urls, max_bytes)
                folder = services.config.storage.data_dir / "inputs" / secrets.token_hex(8)
                inputs = await asyncio.to_thread(
                    save_inputs, data, folder, services.config.storage.data_dir, max_bytes
                )
            spec = build_spec(options, service.models, service.default_model, inputs, personal)
        except BadInput as error:
            await refuse(interaction, service.store, "imagine", str(error))
            return
        await queue_job(services, interaction, spec)
        if inputs.notices:
            await interaction.followup.send("\n".join(inputs.notices), ephemeral=True)

    @imagine.autocomplete("model")
    async def model_names(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return [
            app_commands.Choice(name=name, value=name)
            for name in sorted(self.services.config.models)
            if current.lower() in name.lower()
        ][:25]
