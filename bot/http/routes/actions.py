"""`POST /v1/jobs/{job_id}/actions/{action}`: what Discord's buttons do to a job, over
HTTP, read from the core's registry (bot.core.actions.ACTIONS): an action that makes a
job queues it through the same door (quotas, moderation, audit) and answers like
`POST /v1/jobs`; cancel and delete answer the job. A member acts on their own jobs (another
member's is as unknown as a missing one, as everywhere in this API)."""

from __future__ import annotations

from aiohttp import web

from ...core.actions import ACTIONS, BY_NAME, Action, ActionName, Words
from ...core.door import NO_INPUTS
from ...core.refusals import Refusal
from ...core.views import utcnow
from .. import admission
from ..answers import job_view, json_response
from ..auth import holder_of
from ..bodies import read_json
from ..errors import ApiError, error_replies
from ..models import ActionRequest, JobCreated, JobView
from ..openapi import Link, Operation, Reply
from ..refusals import api_error
from ..services import services_of
from ..waiting import SYNCHRONOUS
from .jobs import cancelled, command_of, created, own_job, refused


async def act(request: web.Request) -> web.Response:
    services, holder = services_of(request), holder_of(request)
    action = BY_NAME.get(request.match_info["action"])
    if action is None:
        known = ", ".join(BY_NAME)
        raise ApiError(404, "not_found", f"action: no such action; actions: {known}")
    body = await read_json(request, ActionRequest) if request.can_read_body else ActionRequest()
    words = _words(action, body)
    # The member's own job: the HTTP API's rule of who may act, stricter than the core's
    # (`Acting.allowed`), as another member's job is unknown here.
    found = await own_job(services, holder, request.match_info["job_id"])
    member = admission.requester(holder, synchronous=False)
    acting = services.core.acting
    if (refusal := acting.applies(action, found)) is not None:
        raise await refused(services, member, action, refusal)
    if action.name is ActionName.CANCEL:
        return await cancelled(request, services, member, found)
    if action.name is ActionName.DELETE:
        await acting.delete_images(found, member)
        watch = request.app[SYNCHRONOUS].watch
        deleted = await services.core.queries.job(found.id)
        assert deleted is not None  # its row stays; only its images go
        return json_response(await job_view(services, watch, deleted))
    source = await acting.source(action, found, body.image)
    if isinstance(source, Refusal):
        raise await refused(services, member, action, source)
    # Audited (and its blocked words counted) as `http.<action>`, Discord's `button.<action>`.
    draft = acting.draft(action, source, words, command=command_of(action))
    # Vary (Region)'s mask, saved like any input (removed by the door if it refuses).
    inputs = await admission.read_mask(services, body.mask) if body.mask else NO_INPUTS
    try:
        submitted = await admission.queued(services, holder, draft, inputs)
    except admission.DoorRefused as door:  # audited by the door
        raise api_error(door.refusal, utcnow()) from None
    return await created(services, submitted)


def _words(action: Action, body: ActionRequest) -> Words | None:
    """The body's fields the action reads; a field it does not read is refused, so a
    client learns at once that it asked for something else."""
    if body.image is not None and not action.per_image:
        raise ApiError(400, "bad_request", f"image: {action.name} acts on the whole job")
    if (body.mask is not None) != action.takes_mask:
        if action.takes_mask:
            raise ApiError(400, "bad_request", f"mask: is required for {action.name}")
        raise ApiError(400, "bad_request", f"mask: {action.name} takes no mask")
    if not action.takes_words:
        if body.prompt is not None or body.negative_prompt or body.zoom is not None:
            raise ApiError(400, "bad_request", f"prompt: {action.name} takes no words")
        return None
    if body.prompt is None:
        raise ApiError(400, "bad_request", f"prompt: is required for {action.name}")
    if body.zoom is not None and not action.takes_zoom:
        raise ApiError(400, "bad_request", f"zoom: {action.name} takes no zoom factor")
    return Words(prompt=body.prompt, negative=body.negative_prompt, zoom=body.zoom)


_MADE = Reply(
    "An action that makes a job: queued (answered as by POST /v1/jobs)",
    JobCreated,
    headers=("Location",),
    links=(Link("getJob", "job_id", "$response.body#/id"),),
)
_ANSWERED = Reply("cancel, delete: the job as it is now", JobView)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        method="POST",
        path="/v1/jobs/{job_id}/actions/{action}",
        operation_id="actOnJob",
        summary="Do to a job what a button under it does in Discord",
        description="\n".join(
            [
                "The actions, from Atelier's registry (the same as Discord's buttons):",
                "",
                *(f"- `{action.name}`: {action.summary}" for action in ACTIONS),
                "",
                "Body: `image` (from 1) for variation, strong and upscale; `prompt` (and"
                " `negative_prompt`) for remix; `image`, `prompt` and `mask` (a PNG, base64,"
                " white = repaint) for vary_region; `{}` or none for the others.",
            ]
        ),
        tag="v1/jobs",
        handler=act,
        replies={
            200: _ANSWERED,
            202: _MADE,
            **error_replies(400, 401, 403, 404, 409, 410, 429, 500),
        },
        json_body=ActionRequest,
        body_required=False,
        path_parameters=("job_id", "action"),
    ),
)
