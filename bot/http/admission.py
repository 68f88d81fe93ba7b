"""From a parsed body to a queued job: the engine, the saved images, the spec, the
moderation screen and the job service's admission, their refusals as ApiErrors."""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
from pathlib import Path

from engine.protocol import MAX_SEED

from ..jobs.service import QueueFull, Submitted
from ..jobs.spec import BadInput, Inputs, JobSpec
from ..moderation.service import ScreenedText, TextKind
from ..store.api_keys import KeyHolder
from ..store.audit import Actor
from ..store.jobs import Requester
from ..store.models import Job, utcnow
from ..store.quotas import OverQuotaError, Refused, UserBanned
from .errors import ApiError
from .models import GenerationOptions, MaskSource, TextPrompt
from .services import CLIENT, ApiServices
from .translate import NO_INPUTS, RequestError, retry_after, save_request_images, spec_for

# The door's lines keep the logger name they had before the door was split up.
log = logging.getLogger("bot.http.server")

# Retry-After when no measured pace says better.
DEFAULT_RETRY_SECONDS = 10.0


def engine_named(services: ApiServices, engine_id: str) -> str:
    models = services.config.models
    if engine_id not in models:
        known = ", ".join(sorted(models))
        raise ApiError(
            404,
            "not_found",
            f"engine_id: the specified engine (ID {engine_id}) was not found; engines: {known}",
        )
    return engine_id


def default_engine(services: ApiServices, personal_model: object) -> str:
    if isinstance(personal_model, str) and personal_model in services.config.models:
        return personal_model
    return services.config.engine.default_model


async def save_images(
    services: ApiServices,
    init_image: bytes,
    mask_image: bytes | None = None,
    mask_source: MaskSource | None = None,
) -> Inputs:
    config = services.config
    data_dir = config.storage.data_dir
    folder = data_dir / "inputs" / secrets.token_hex(8)
    max_bytes = int(config.generation.max_attachment_mb * 2**20)
    try:
        return await asyncio.to_thread(
            save_request_images,
            init_image,
            mask_image,
            mask_source,
            folder,
            data_dir,
            max_bytes,
        )
    except RequestError as error:
        raise ApiError(400, error.name, str(error)) from None


async def spec_of(
    services: ApiServices,
    holder: KeyHolder,
    body: GenerationOptions,
    prompts: list[TextPrompt],
    engine: str,
    *,
    inputs: Inputs = NO_INPUTS,
    size: tuple[int | None, int | None] = (None, None),
    strength: float | None = None,
    stop: int = 100,
) -> JobSpec:
    personal = await services.users.defaults(holder.user_id)
    config = services.config
    try:
        return spec_for(
            body,
            prompts,
            engine,
            config.models,
            personal,
            config.styles,
            lambda: secrets.randbelow(MAX_SEED) + 1,
            inputs=inputs,
            size=size,
            strength=strength,
            stop=stop,
        )
    except RequestError as error:
        raise ApiError(400, error.name, str(error)) from None
    except BadInput as error:
        raise ApiError(400, "bad_request", str(error)) from None


async def blocked(services: ApiServices, holder: KeyHolder, spec: JobSpec) -> Job | None:
    """The job recorded as blocked when the prompt holds a term the key's server (or
    every server) blocks; None when it may go."""
    screened = await services.moderation.screen(
        Actor(holder.user_id, holder.guild_id),
        [ScreenedText(TextKind.PROMPT, f"{spec.prompt}\n{spec.negative_prompt}")],
        CLIENT,
    )
    if screened is None:
        return None
    term = screened.term
    for path in (spec.init_image, spec.mask_image):
        if path is not None:  # the request's images were saved for a job that never runs
            folder = services.config.storage.data_dir / Path(path).parent
            await asyncio.to_thread(shutil.rmtree, folder, True)
    reason = f"the prompt contains `{term}`, which this server does not allow"
    job = await services.jobs.store.create_blocked(
        secrets.token_hex(5),
        _requester(holder, synchronous=False),
        spec,
        spec.model,
        spec.seeds,
        reason,
    )
    log.info("job %s: blocked at the HTTP door (key %d)", job.id, holder.key_id)
    return job


def _requester(holder: KeyHolder, synchronous: bool) -> Requester:
    return Requester.over_http(
        user_id=holder.user_id,
        user_name=holder.user_name,
        guild_id=holder.guild_id,
        role_ids=holder.role_ids,
        api_key_id=holder.key_id,
        synchronous=synchronous,
    )


async def submit(
    services: ApiServices, holder: KeyHolder, spec: JobSpec, synchronous: bool
) -> Submitted:
    """The job service's own door: same admission, queue, batches and ledger as Discord."""
    jobs = services.jobs
    try:
        return await jobs.submit(spec, _requester(holder, synchronous))
    except UserBanned as banned:
        raise ApiError(403, "permission_denied", banned.message) from None
    except OverQuotaError as over:
        quota = over.over
        if quota.resets_at is not None:
            wait = (quota.resets_at - utcnow()).total_seconds()
            when = f" It resets at {quota.resets_at.isoformat()}."
        else:
            wait = await _seconds_per_job(services)
            when = " Wait for one of your jobs to finish."
        raise ApiError(
            429,
            "quota_exceeded",
            f"samples: this would go over your {quota.limit}: {quota.left}.{when}",
            {"Retry-After": retry_after(wait)},
        ) from None
    except QueueFull as full:
        waiting = await jobs.store.waiting_count()
        wait = waiting * await _seconds_per_job(services)
        raise ApiError(
            429, "queue_full", full.message, {"Retry-After": retry_after(wait)}
        ) from None
    except Refused as refused:
        raise ApiError(429, "quota_exceeded", refused.message) from None


async def _seconds_per_job(services: ApiServices) -> float:
    """About how long a job takes from the queue's side: the measured pace, or
    DEFAULT_RETRY_SECONDS before there is one."""
    per_job = (await services.jobs.pace()).seconds_per_job()
    return DEFAULT_RETRY_SECONDS if per_job is None else per_job
