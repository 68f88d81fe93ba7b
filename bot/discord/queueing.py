"""Queue a job for a member and say so: shared by /imagine and the V/U buttons."""

from __future__ import annotations

import discord

from ..jobs.spec import JobSpec
from ..store.quotas import Refused
from .common import Services, requester_of


async def queue_job(services: Services, interaction: discord.Interaction, spec: JobSpec) -> None:
    """Submit `spec` for the member behind the (already deferred) `interaction`.

    The job row exists before the member reads "queued"; the reply then
    follows the job through `services.delivery`.
    """
    try:
        submitted = await services.jobs.submit(spec, requester_of(interaction))
    except Refused as refusal:  # banned or over quota; the store audited it
        await interaction.edit_original_response(content=f"⚠️ {refusal.message}", view=None)
        return
    job_id = submitted.job.id
    ahead = submitted.queue_position - 1
    where = "next in line" if ahead == 0 else f"position {submitted.queue_position} in queue"
    what = f"{spec.mode} of image {spec.source_image} of `{spec.source_job}`" if (
        spec.source_job
    ) else str(spec.mode)  # fmt: skip
    await services.delivery.announce_queued(
        job_id,
        interaction,
        f"⏳ Job `{job_id}` queued ({where}): {what}, {spec.count} × "
        f"{spec.width}×{spec.height}, {spec.steps} steps, seed {spec.seed}.",
    )
