"""Queue a job for a member and say so: shared by /imagine and the V/U buttons."""

from __future__ import annotations

import discord

from ..jobs.service import QueueFull
from ..jobs.spec import JobSpec
from ..store.quotas import Refused
from .common import Services, refuse, requester_of, tell_privately


async def queue_job(services: Services, interaction: discord.Interaction, spec: JobSpec) -> None:
    """Submit `spec` for the member behind the (already deferred) `interaction`.

    The job row exists before the member reads "queued"; the reply then
    follows the job through `services.delivery`.
    """
    requester = requester_of(interaction)
    try:
        submitted = await services.jobs.submit(spec, requester)
    except QueueFull as full:
        await refuse(interaction, services.store, "imagine", full.message, kind="queue_full")
        return
    except Refused as refusal:  # banned or over quota; the store audited it
        await tell_privately(interaction, refusal.message)
        return
    job = submitted.job
    what = f"{spec.mode} of image {spec.source_image} of `{spec.source_job}`" if (
        spec.source_job
    ) else str(spec.mode)  # fmt: skip
    details = (
        f"{what}, {spec.count} × {spec.width}×{spec.height}, {spec.steps} steps, seed {spec.seed}."
    )
    template = f"⏳ Job `{job.id}` queued ({{where}}): " + details.replace("{", "{{").replace(
        "}", "}}"
    )
    await services.delivery.announce_queued(job, submitted.queue_position, template)
