"""Queue a member's jobs and say so: shared by /imagine, replies, context menus and buttons."""

from __future__ import annotations

import logging

from ..jobs.service import QueueFull, QueuePlace, Submitted
from ..jobs.spec import JobSpec
from ..store.commands import AlreadyHandled
from ..store.jobs import Requester
from ..store.models import Job, Lane
from ..store.quotas import Refused
from .common import Reply, Services

log = logging.getLogger(__name__)


async def queue_job(
    services: Services, requester: Requester, spec: JobSpec, reply: Reply
) -> Job | None:
    """Submit `spec` for `requester` (whose interaction is already deferred) and show it
    queued; None when it was refused (and the member told) or handled before."""
    jobs = await queue_jobs(services, requester, [spec], reply)
    return jobs[0] if jobs else None


async def queue_jobs(
    services: Services, requester: Requester, specs: list[JobSpec], reply: Reply
) -> list[Job]:
    """Submit the jobs of one command together (all or none) and show each queued in
    its own message: the first in the reply, the others in follow-ups made first, so
    every job's progress and result edit its own message. [] when refused (the member
    told) or handled before.

    The job rows exist before the member reads "queued"; each message then follows
    its job through `services.delivery`.
    """
    targets = await reply.placeholders(len(specs))
    try:
        submitted = await services.jobs.submit_many(specs, requester, targets)
    except AlreadyHandled:
        log.info("command %s was handled before; nothing to do", requester.command_id)
        await reply.discard(targets)
        return []
    except QueueFull as full:
        await reply.discard(targets)
        await reply.refuse(full.message)
        await services.store.record_refusal(
            "imagine.refused",
            requester.user_id,
            requester.guild_id,
            requester.channel_id,
            full.message,
            kind="queue_full",
        )
        if requester.command_id is not None:
            await services.commands.settle(requester.command_id, "refused: queue full")
        return []
    except Refused as refusal:  # banned or over quota; the store audited and settled it
        await reply.discard(targets)
        await reply.refuse(refusal.message)
        return []
    for number, (spec, queued) in enumerate(zip(specs, submitted, strict=True), start=1):
        ordinal = f"({number}/{len(specs)}) " if len(specs) > 1 else ""
        template = ordinal + queued_template(services, spec, queued)
        place = QueuePlace(queued.queue_position, queued.eta_seconds)
        await services.delivery.announce_queued(queued.job, place, template)
    return [queued.job for queued in submitted]


def queued_template(services: Services, spec: JobSpec, queued: Submitted) -> str:
    """The queued line, with `{where}` for its place in the queue (kept current), what it
    makes and what it is estimated to cost, before any GPU time is spent."""
    job = queued.job
    what = (
        f"{spec.mode} of image {spec.source_image} of `{spec.source_job}`"
        if (spec.source_job)
        else str(spec.mode)
    )
    details = (
        f"{what}, {spec.count} × {spec.width}×{spec.height}, {spec.steps} steps, seed {spec.seed}."
    )
    if queued.estimate is not None:
        currency = services.quotas.rules.pricing.currency
        details += (
            f" Estimated cost: {queued.estimate.gpu_seconds:.1f} GPU s"
            f" ≈ {money(queued.estimate.cost)} {currency}."
        )
    if queued.lane is Lane.RELAX:
        details += " Over your daily quota: it runs when the GPU is otherwise free."
    escaped = details.replace("{", "{{").replace("}", "}}")
    return f"⏳ Job `{job.id}` queued ({{where}}): {escaped}"


def money(amount: float) -> str:
    """An amount with the decimals that make small GPU costs readable."""
    if amount == 0 or amount >= 1:
        return f"{amount:.2f}"
    return f"{amount:.4f}" if amount >= 0.0001 else f"{amount:.2g}"
