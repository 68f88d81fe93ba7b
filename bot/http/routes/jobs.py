"""The job API: queue a generation and answer at once (or, with `?wait=true`, once it
ended, up to `[http] wait_seconds`), read a job, cancel it; a member sees only their
own jobs."""

from __future__ import annotations

from aiohttp import web

from ...core.actions import BY_NAME, Action, ActionName
from ...core.door import NO_INPUTS, Draft, InputSource, Origin
from ...core.refusals import Refusal
from ...core.views import Job, JobState, KeyHolder, Requester, utcnow
from ...jobs.service import Submitted
from .. import admission
from ..answers import cache_headers, eta_of, job_view, json_response
from ..auth import holder_of
from ..bodies import read_form, read_json
from ..errors import ApiError, error_replies
from ..models import ImageJobRequest, JobCreated, JobRequest, JobView
from ..openapi import Link, Operation, Reply
from ..refusals import api_error
from ..services import ApiServices, services_of
from ..translate import stop_for, strength_for
from ..waiting import SYNCHRONOUS, StillRunning


async def create_job(request: web.Request) -> web.Response:
    services, holder = services_of(request), holder_of(request)
    personal_model = (await services.users.defaults(holder.user_id)).get("model")
    inputs: InputSource = NO_INPUTS
    if request.content_type == "application/json":
        json_body = await read_json(request, JobRequest)
        engine = admission.engine_named(
            services, json_body.engine_id or admission.default_engine(services, personal_model)
        )
        if json_body.reference_images:
            inputs = await admission.save_references(services, json_body.reference_images)
        draft = await admission.draft_of(
            services,
            json_body,
            json_body.text_prompts,
            engine,
            inputs=inputs,
            size=(json_body.width, json_body.height),
        )
        draft = admission.with_references(draft, json_body)
    else:
        form_body = await read_form(request, ImageJobRequest, services.config.http.max_body_mb)
        engine = admission.engine_named(
            services, form_body.engine_id or admission.default_engine(services, personal_model)
        )
        inputs = await admission.save_images(
            services, form_body.init_image, form_body.mask_image, form_body.mask_source
        )
        draft = await admission.draft_of(
            services,
            form_body,
            form_body.text_prompts,
            engine,
            inputs=inputs,
            strength=strength_for(
                form_body.init_image_mode, form_body.image_strength, form_body.step_schedule_start
            ),
            stop=stop_for(form_body.step_schedule_end),
        )
    wait = request.query.get("wait", "").lower() in ("true", "1")
    try:
        if wait:
            return await waited(request, services, holder, draft, inputs)
        submitted = await admission.queued(services, holder, draft, inputs)
    except admission.DoorRefused as refused:
        blocked = await admission.blocked_job(services, holder, draft, inputs, refused.refusal)
        answer = JobCreated(id=blocked.id, status=blocked.state, position=None, eta_seconds=None)
        return json_response(answer, 202, {"Location": f"/v1/jobs/{blocked.id}"})
    return await created(services, submitted)


async def waited(
    request: web.Request,
    services: ApiServices,
    holder: KeyHolder,
    draft: Draft,
    inputs: InputSource,
) -> web.Response:
    """`?wait=true`: the job once it ended (200, its view with its images), or 202 and
    where to poll it when it had not after `[http] wait_seconds`."""
    synchronous = request.app[SYNCHRONOUS]
    submission = admission.queued(services, holder, draft, inputs, synchronous=True)
    job = await synchronous.run(submission)
    if isinstance(job, StillRunning):
        return await polled(services, job.job)
    return json_response(await job_view(services, synchronous.watch, job))


async def polled(services: ApiServices, job: Job) -> web.Response:
    """202 for a job whose request stopped waiting for it: where it is, and the
    Location to poll."""
    position = await services.jobs.queue_position(job.id) if job.state is JobState.QUEUED else None
    answer = JobCreated(
        id=job.id,
        status=job.state,
        position=position,
        eta_seconds=None if job.state.finished else await eta_of(services, job.id, position or 1),
    )
    return json_response(answer, 202, {"Location": f"/v1/jobs/{job.id}"})


async def created(services: ApiServices, submitted: Submitted) -> web.Response:
    """202 for a queued job: where it is, its place in the queue and an estimate (none
    for one the result cache answered at once: it is already succeeded)."""
    job = submitted.job
    if job.state.finished:
        answer = JobCreated(id=job.id, status=job.state, position=None, eta_seconds=None)
        headers = {"Location": f"/v1/jobs/{job.id}"} | cache_headers(job)
        return json_response(answer, 202, headers)
    answer = JobCreated(
        id=job.id,
        status=job.state,
        position=submitted.queue_position,
        eta_seconds=await eta_of(services, job.id, submitted.queue_position),
    )
    return json_response(answer, 202, {"Location": f"/v1/jobs/{job.id}"})


async def get_job(request: web.Request) -> web.Response:
    services = services_of(request)
    job = await own_job(services, holder_of(request), request.match_info["job_id"])
    view = await job_view(services, request.app[SYNCHRONOUS].watch, job)
    return json_response(view, headers=cache_headers(job))


async def cancel_job(request: web.Request) -> web.Response:
    """The `cancel` action (bot.http.routes.actions) at the job's own path."""
    services, holder = services_of(request), holder_of(request)
    job = await own_job(services, holder, request.match_info["job_id"])
    return await cancelled(request, services, admission.requester(holder, False), job)


async def cancelled(
    request: web.Request, services: ApiServices, member: Requester, job: Job
) -> web.Response:
    """Cancel the job. Answered once it ended (a running one stops within a step), so the
    answer is the outcome: a job that finished first (its result on its way) is a 409."""
    ended = await services.core.acting.cancel(job, member)
    if isinstance(ended, Refusal):
        raise await refused(services, member, BY_NAME[ActionName.CANCEL], ended)
    return json_response(await job_view(services, request.app[SYNCHRONOUS].watch, ended))


async def refused(
    services: ApiServices, member: Requester, action: Action, refusal: Refusal
) -> ApiError:
    """An action's refusal audited as the door audits its own (`http.<action>.refused`),
    as an HTTP error."""
    await services.core.door.refused(member, command_of(action), Origin.HTTP, refusal)
    return api_error(refusal, utcnow())


def command_of(action: Action) -> str:
    """An action's audit name over HTTP (Discord's is `button.<action>`)."""
    return f"http.{action.name}"


async def own_job(services: ApiServices, holder: KeyHolder, job_id: str) -> Job:
    """The member's job; another member's is as unknown as a missing one."""
    job = await services.core.queries.job(job_id, of=holder.user_id)
    if job is None:
        raise ApiError(404, "not_found", f"job_id: no job {job_id} of yours")
    return job


_JOB_ERRORS = error_replies(401, 403, 404, 429, 500)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        method="POST",
        path="/v1/jobs",
        operation_id="createJob",
        summary="Queue a generation and answer at once",
        description="A text-to-image body as JSON, or an image-to-image body as multipart"
        " (masking when it has mask_source); `engine_id` picks the model. With the query"
        " `?wait=true` the answer waits for the job's end (200 with the job, as GET"
        " /v1/jobs/{job_id} reads it) for up to the server's `[http] wait_seconds`, then"
        " is 202 with the job's id and Location to poll.",
        tag="v1/jobs",
        handler=create_job,
        replies={
            202: Reply(
                "Queued (or blocked by moderation, or answered from the result cache)",
                JobCreated,
                headers=("Location", "Atelier-Cached-From"),
                links=(
                    Link("getJob", "job_id", "$response.body#/id"),
                    Link("cancelJob", "job_id", "$response.body#/id"),
                ),
            ),
            200: Reply("With ?wait=true: the job, ended", JobView),
            **error_replies(400, 401, 403, 404, 413, 429, 500),
        },
        json_body=JobRequest,
        form_body=ImageJobRequest,
    ),
    Operation(
        method="GET",
        path="/v1/jobs/{job_id}",
        operation_id="getJob",
        summary="A job's status, progress and images",
        tag="v1/jobs",
        handler=get_job,
        replies={200: Reply("The job", JobView, headers=("Atelier-Cached-From",)), **_JOB_ERRORS},
        path_parameters=("job_id",),
    ),
    Operation(
        method="DELETE",
        path="/v1/jobs/{job_id}",
        operation_id="cancelJob",
        summary="Cancel a queued or running job",
        tag="v1/jobs",
        handler=cancel_job,
        replies={
            200: Reply("The job, cancelled", JobView),
            **error_replies(401, 403, 404, 409, 429, 500),
        },
        path_parameters=("job_id",),
    ),
)
