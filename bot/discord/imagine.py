"""/imagine: defer at once, check the input, queue the job, say where it stands."""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands

from engine.protocol import MAX_IMAGES_PER_JOB, MAX_SEED, MAX_STEPS

from ..jobs.service import JobService
from ..jobs.spec import ASPECTS, BadInput, Options, build_spec
from ..store.jobs import Requester
from .delivery import Delivery
from .errors import refuse

log = logging.getLogger(__name__)


def requester_of(interaction: discord.Interaction) -> Requester:
    return Requester(
        user_id=interaction.user.id,
        user_name=interaction.user.name,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        interaction_id=interaction.id,
        interaction_token=interaction.token,
    )


def imagine_command(
    service: JobService, delivery: Delivery, models: list[str], default_model: str
) -> app_commands.Command[Any, ..., None]:
    """Build /imagine bound to the running services (no globals)."""

    @app_commands.command(name="imagine", description="Make images from a text prompt")
    @app_commands.describe(
        prompt="What to draw. Flags work too: --ar 16:9 --seed 42 --no text",
        negative="What to keep out of the image",
        count=f"How many images (1-{MAX_IMAGES_PER_JOB})",
        seed="Seed of the first image; image n uses seed + n - 1",
        steps="Denoising steps (more is slower, often finer)",
        cfg="How closely to follow the prompt (about 4-12)",
        aspect="Shape of the image",
        model="Which model to use",
    )
    @app_commands.choices(aspect=[app_commands.Choice(name=a, value=a) for a in ASPECTS])
    async def imagine(
        interaction: discord.Interaction,
        prompt: str,
        negative: str | None = None,
        count: app_commands.Range[int, 1, MAX_IMAGES_PER_JOB] | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        steps: app_commands.Range[int, 1, MAX_STEPS] | None = None,
        cfg: app_commands.Range[float, 0.0, 30.0] | None = None,
        aspect: str | None = None,
        model: str | None = None,
    ) -> None:
        options = Options(
            prompt=prompt, negative_prompt=negative, count=count, seed=seed, steps=steps,
            cfg=cfg, aspect=aspect, model=model,
        )  # fmt: skip
        try:
            spec = build_spec(options, service.models, service.default_model)
        except BadInput as error:
            await refuse(interaction, service.store, "imagine", str(error))
            return
        # Defer before touching the database: Discord allows 3 s for a first answer.
        await interaction.response.defer(thinking=True)
        submitted = await service.submit(spec, requester_of(interaction))
        delivery.track(submitted.job.id, interaction)
        ahead = submitted.queue_position - 1
        where = "next in line" if ahead == 0 else f"position {submitted.queue_position} in queue"
        await interaction.edit_original_response(
            content=f"⏳ Job `{submitted.job.id}` queued ({where}): {spec.count} × "
            f"{spec.width}×{spec.height}, {spec.steps} steps, seed {spec.seed}."
        )

    @imagine.autocomplete("model")
    async def model_names(
        interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return [
            app_commands.Choice(name=name, value=name)
            for name in models
            if current.lower() in name.lower()
        ][:25]

    return imagine
