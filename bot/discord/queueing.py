"""Queue a member's checked jobs through the core's door and say so: shared by /imagine,
replies, context menus and buttons."""

from __future__ import annotations

import logging

from ..core.door import Checked, Draft, InputSource, Origin
from ..core.refusals import Refusal
from ..core.views import Job, Lane, Requester
from ..jobs.service import QueuePlace, Submitted
from ..jobs.spec import JobSpec
from .common import Reply, Services
from .refusals import sentence

log = logging.getLogger(__name__)


async def admit_and_show(
    services: Services,
    requester: Requester,
    draft: Draft,
    inputs: InputSource,
    origin: Origin,
    checked: Checked,
    reply: Reply,
) -> list[Job]:
    """Admit a checked request (bot.core.door) for `requester`, whose interaction is
    already deferred, and show each job queued in its own message: the first in the
    reply, the others in follow-ups made first, so every job's progress and result edit
    its own message. [] when refused (the member told) or handled before.

    The job rows exist before the member reads "queued"; each message then follows
    its job through `services.delivery`.
    """
    outcome = await services.door.admit(requester, draft, inputs, origin, checked, messages=reply)
    if isinstance(outcome, Refusal):
        await reply.refuse(sentence(outcome))
        return []
    specs = outcome.specs
    for number, (spec, queued) in enumerate(zip(specs, outcome.jobs, strict=True), start=1):
        if queued.job.state.finished:  # answered from the result cache: delivered as is
            continue
        ordinal = f"({number}/{len(specs)}) " if len(specs) > 1 else ""
        template = ordinal + queued_template(services, spec, queued)
        place = QueuePlace(queued.queue_position, queued.eta_seconds)
        await services.delivery.announce_queued(queued.job, place, template)
    if outcome.jobs and outcome.notices:
        await reply.notice("\n".join(outcome.notices))
    return [queued.job for queued in outcome.jobs]


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
