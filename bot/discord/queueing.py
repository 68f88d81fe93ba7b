"""Queue a job for a member and say so: shared by /imagine and the V/U buttons."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord

from ..jobs.spec import JobSpec
from ..store.jobs import Requester
from ..store.quotas import Refused

if TYPE_CHECKING:
    from .client import AtelierClient


def requester_of(interaction: discord.Interaction) -> Requester:
    return Requester(
        user_id=interaction.user.id,
        user_name=interaction.user.name,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        interaction_id=interaction.id,
        interaction_token=interaction.token,
        role_ids=tuple(role.id for role in getattr(interaction.user, "roles", [])),
    )


async def queue_job(client: AtelierClient, interaction: discord.Interaction, spec: JobSpec) -> None:
    """Submit `spec` for the member behind the (already deferred) `interaction`.

    The job row exists before the member reads "queued"; the reply then
    follows the job through `client.delivery`.
    """
    try:
        submitted = await client.service.submit(spec, requester_of(interaction))
    except Refused as refusal:  # banned or over quota; the store audited it
        await interaction.edit_original_response(content=f"⚠️ {refusal.message}", view=None)
        return
    job_id = submitted.job.id
    ahead = submitted.queue_position - 1
    where = "next in line" if ahead == 0 else f"position {submitted.queue_position} in queue"
    what = f"{spec.mode} of image {spec.source_image} of `{spec.source_job}`" if (
        spec.source_job
    ) else str(spec.mode)  # fmt: skip
    await client.delivery.announce_queued(
        job_id,
        interaction,
        f"⏳ Job `{job_id}` queued ({where}): {what}, {spec.count} × "
        f"{spec.width}×{spec.height}, {spec.steps} steps, seed {spec.seed}.",
    )
