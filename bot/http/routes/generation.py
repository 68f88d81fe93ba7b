"""Stability v1's generation routes: text-to-image, image-to-image and masking, each
answered on its own connection once its job ended, or after `[http] wait_seconds` with
the job's id to poll (202)."""

from __future__ import annotations

import logging
import uuid

from aiohttp import web

from ...core.door import NO_INPUTS, Draft, InputSource
from ...core.views import JobState, KeyHolder
from ...jobs.failures import failure_reason
from .. import admission
from ..answers import generated
from ..auth import holder_of
from ..bodies import read_form, read_json
from ..errors import ApiError, error_replies
from ..models import (
    GenerationResponse,
    ImageToImageRequest,
    JobCreated,
    MaskingRequest,
    TextToImageRequest,
)
from ..openapi import PNG, Operation, Reply
from ..services import ApiServices, services_of
from ..translate import stop_for, strength_for
from ..waiting import SYNCHRONOUS, StillRunning
from .jobs import polled

# The door's lines keep the logger name they had before the door was split up.
log = logging.getLogger("bot.http.server")


async def text_to_image(request: web.Request) -> web.StreamResponse:
    services, holder = services_of(request), holder_of(request)
    engine = admission.engine_named(services, request.match_info["engine_id"])
    body = await read_json(request, TextToImageRequest)
    png = _wants_png(request, body.samples)
    draft = await admission.draft_of(
        services, body, body.text_prompts, engine, size=(body.width, body.height)
    )
    return await _generate_now(request, services, holder, draft, NO_INPUTS, png)


async def image_to_image(request: web.Request) -> web.StreamResponse:
    services, holder = services_of(request), holder_of(request)
    engine = admission.engine_named(services, request.match_info["engine_id"])
    body = await read_form(request, ImageToImageRequest, services.config.http.max_body_mb)
    png = _wants_png(request, body.samples)
    inputs = await admission.save_images(services, body.init_image)
    draft = await admission.draft_of(
        services,
        body,
        body.text_prompts,
        engine,
        inputs=inputs,
        strength=strength_for(body.init_image_mode, body.image_strength, body.step_schedule_start),
        stop=stop_for(body.step_schedule_end),
    )
    return await _generate_now(request, services, holder, draft, inputs, png)


async def masking(request: web.Request) -> web.StreamResponse:
    services, holder = services_of(request), holder_of(request)
    engine = admission.engine_named(services, request.match_info["engine_id"])
    body = await read_form(request, MaskingRequest, services.config.http.max_body_mb)
    png = _wants_png(request, body.samples)
    inputs = await admission.save_images(
        services, body.init_image, body.mask_image, body.mask_source
    )
    draft = await admission.draft_of(services, body, body.text_prompts, engine, inputs=inputs)
    return await _generate_now(request, services, holder, draft, inputs, png)


def _wants_png(request: web.Request, samples: int) -> bool:
    accept = request.headers.get("Accept", "")
    png = PNG in accept and "application/json" not in accept
    if png and samples > 1:
        raise ApiError(
            400,
            "invalid_samples",
            "samples: must be 1 with Accept: image/png; ask for JSON to get several images",
        )
    return png


async def _generate_now(
    request: web.Request,
    services: ApiServices,
    holder: KeyHolder,
    draft: Draft,
    inputs: InputSource,
    png: bool,
) -> web.Response:
    """Queue the job through the core's door, wait for its end on this connection, answer
    with its images (a blocked prompt's: content-filtered), or with where to poll it once
    the wait is over."""
    submission = admission.queued(services, holder, draft, inputs, synchronous=True)
    try:
        job = await request.app[SYNCHRONOUS].run(submission)
    except admission.DoorRefused as refused:
        blocked = await admission.blocked_job(services, holder, draft, inputs, refused.refusal)
        return await generated(services, blocked, png)
    if isinstance(job, StillRunning):
        return await polled(services, job.job)
    if job.state is JobState.FAILED:
        error_id = str(uuid.uuid4())
        log.error(
            "job %s: failed for its HTTP client (error id %s): %s", job.id, error_id, job.error
        )
        reason = failure_reason(job.error)  # the error itself stays in the log
        raise ApiError(
            500,
            "server_error",
            f"Generation failed (job {job.id}): {reason}"
            f" The admin can find it in the bot's log by the id {error_id}.",
        )
    if job.state is JobState.CANCELLED:
        raise ApiError(409, "conflict", f"job {job.id} was cancelled before it finished")
    return await generated(services, job, png)


_GENERATION_ERRORS = error_replies(400, 401, 403, 404, 409, 413, 429, 500)
_GENERATED = Reply(
    "The images: JSON artifacts, or PNG bytes with Accept: image/png",
    GenerationResponse,
    png=True,
    headers=("Finish-Reason", "Seed", "Atelier-Cached-From"),
)
# A job not done within `[http] wait_seconds` is left to its client to poll.
_STILL_RUNNING = Reply(
    "Not done after the server's wait: the job's id and Location to poll",
    JobCreated,
    headers=("Location",),
)
_ENGINE = ("engine_id",)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        method="POST",
        path="/v1/generation/{engine_id}/text-to-image",
        operation_id="textToImage",
        summary="Images from text",
        tag="v1/generation",
        handler=text_to_image,
        replies={200: _GENERATED, 202: _STILL_RUNNING, **_GENERATION_ERRORS},
        json_body=TextToImageRequest,
        accept_png=True,
        path_parameters=_ENGINE,
    ),
    Operation(
        method="POST",
        path="/v1/generation/{engine_id}/image-to-image",
        operation_id="imageToImage",
        summary="An image changed by text",
        tag="v1/generation",
        handler=image_to_image,
        replies={200: _GENERATED, 202: _STILL_RUNNING, **_GENERATION_ERRORS},
        form_body=ImageToImageRequest,
        accept_png=True,
        path_parameters=_ENGINE,
    ),
    Operation(
        method="POST",
        path="/v1/generation/{engine_id}/image-to-image/masking",
        operation_id="masking",
        summary="Part of an image repainted",
        tag="v1/generation",
        handler=masking,
        replies={200: _GENERATED, 202: _STILL_RUNNING, **_GENERATION_ERRORS},
        form_body=MaskingRequest,
        accept_png=True,
        path_parameters=_ENGINE,
    ),
)
