"""Queue a job for a member and say so: shared by /imagine and the V/U buttons."""

from __future__ import annotations

import logging

from ..jobs.service import QueueFull, QueuePlace
from ..jobs.spec import JobSpec
from ..store.commands import AlreadyHandled
from ..store.jobs import Requester
from ..store.models import Job
from ..store.quotas import Refused
from .common import Followup, Services

log = logging.getLogger(__name__)


async def queue_job(
    services: Services, requester: Requester, spec: JobSpec, reply: Followup
) -> Job | None:
    """Submit `spec` for `requester` (whose interaction is already deferred) and show it
    queued; None when it was refused (and the member told) or handled before.

    The job row exists before the member reads "queued"; the reply then
    follows the job through `services.delivery`.
    """
    try:
        submitted = await services.jobs.submit(spec, requester)
    except AlreadyHandled:
        log.info("command %s was handled before; nothing to do", requester.command_id)
        return None
    except QueueFull as full:
        await reply.refuse(full.message)
        await services.store.record_refusal(
            "imagine.refused", requester.user_id, requester.guild_id, requester.channel_id,
            full.message,
        )  # fmt: skip
        if requester.command_id is not None:
            await services.commands.settle(requester.command_id, "refused: queue full")
        return None
    except Refused as refusal:  # banned or over quota; the store audited and settled it
        await reply.refuse(refusal.message)
        return None
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
    place = QueuePlace(submitted.queue_position, submitted.eta_seconds)
    await services.delivery.announce_queued(job, place, template)
    return job
