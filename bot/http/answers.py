"""What the API answers about a job: its images (JSON artifacts or PNG bytes) and its
view (status, position, progress, estimate), read from the stored job."""

from __future__ import annotations

import asyncio
import base64

from aiohttp import web
from pydantic import BaseModel

from engine.protocol import Progress

from ..core.views import Job, JobState
from ..jobs.failures import failure_reason
from .models import GenerationResponse, JobProgress, JobView, LoraRequest
from .openapi import PNG
from .services import ApiServices
from .translate import artifacts_of
from .waiting import JobWatch


def json_response(
    body: BaseModel, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(body.model_dump(mode="json"), status=status, headers=headers)


async def generated(services: ApiServices, job: Job, png: bool) -> web.Response:
    images = await _stored_images(services, job)
    artifacts = await asyncio.to_thread(artifacts_of, job, images.get)
    if not png:
        return json_response(GenerationResponse(artifacts=artifacts), headers=cache_headers(job))
    first = artifacts[0]
    data = await asyncio.to_thread(base64.b64decode, first.base64)
    return web.Response(
        body=data,
        content_type=PNG,
        headers={"Finish-Reason": str(first.finishReason), "Seed": str(first.seed)}
        | cache_headers(job),
    )


def cache_headers(job: Job) -> dict[str, str]:
    """`Atelier-Cached-From` for a job the result cache answered (bot.jobs.cache)."""
    return {} if job.cached_from is None else {"Atelier-Cached-From": job.cached_from}


async def _stored_images(services: ApiServices, job: Job) -> dict[str, bytes]:
    """The job's images in the store, by key (one that is gone is left out)."""
    images = {}
    for output in job.outputs:
        if (data := await services.jobs.output_bytes(output.path)) is not None:
            images[output.path] = data
    return images


async def job_view(services: ApiServices, watch: JobWatch, job: Job) -> JobView:
    position = None
    if job.state is JobState.QUEUED:
        position = await services.jobs.queue_position(job.id)
    progress = watch.progress(job.id) if job.state is JobState.RUNNING else None
    artifacts = (
        await asyncio.to_thread(artifacts_of, job, (await _stored_images(services, job)).get)
        if job.state.finished
        else None
    )
    eta = None
    if job.state is JobState.QUEUED:
        eta = await eta_of(services, job.id, position or 1)
    elif job.state is JobState.RUNNING:
        eta = await eta_of(services, job.id, 1, progress)
    return JobView(
        id=job.id,
        status=job.state,
        engine_id=job.model,
        position=position,
        eta_seconds=eta,
        progress=JobProgress(step=progress.step, total=progress.total) if progress else None,
        artifacts=artifacts,
        created_at=job.created_at,
        error=failure_reason(job.error) if job.state is JobState.FAILED else job.error,
        finished_at=job.finished_at,
        cached_from=job.cached_from,
        draft=job.spec.draft,
        loras=[LoraRequest(name=lora.name, weight=lora.weight) for lora in job.spec.loras],
    )


async def eta_of(
    services: ApiServices, job_id: str, position: int, progress: Progress | None = None
) -> float:
    """About how long until the job is done (bot.core.queries.Queries.done_in)."""
    left = 1.0 - progress.step / progress.total if progress else 1.0
    return await services.core.queries.done_in(job_id, position, left)
