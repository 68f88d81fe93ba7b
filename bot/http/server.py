"""The HTTP API: Stability's REST API v1 and a small job API, on the same job service as
Discord.

A request's key acts as its member: the same admission (bans, timed pauses, quotas
of their roles as kept with the key), the same fair queue and batches, the same
blocklist (the config's and that of the server the key was made in, with strikes),
ledger and audit, with the client recorded as
`http` and the key's id. An HTTP job never waits for anything Discord does: its
answer is read from the stored job, by the request that waits for it or by
`GET /v1/jobs/{id}`.

A synchronous request waits on a JobListener (a future per job), never by
polling. If its client goes away, aiohttp cancels the handler and the job is
cancelled, which refunds its reservation; a request cut off by a stop is cancelled
at the next start.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import secrets
import shutil
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import BaseModel, ValidationError

from engine.protocol import MAX_SEED, Progress

from ..config import Config
from ..jobs.failures import failure_reason
from ..jobs.pace import seconds_until_done
from ..jobs.service import JobService, QueueFull, Submitted
from ..jobs.spec import BadInput, Inputs, JobSpec
from ..moderation.rate import Buckets
from ..moderation.service import Moderation, ScreenedText, TextKind
from ..store.api_keys import ApiKeyStore, KeyHolder
from ..store.audit import Actor
from ..store.health import DatabaseHeartbeat, HealthStore
from ..store.jobs import JobNotFound, Requester
from ..store.models import Job, JobState, utcnow
from ..store.quotas import OverQuotaError, QuotaStore, Refused, UserBanned
from ..store.users import UserStore
from .models import (
    Account,
    Balance,
    Engine,
    EngineHealth,
    EngineList,
    ErrorBody,
    GenerationOptions,
    GenerationResponse,
    Health,
    ImageJobRequest,
    ImageToImageRequest,
    JobCreated,
    JobProgress,
    JobRequest,
    JobView,
    MaskingRequest,
    MaskSource,
    Organization,
    TextPrompt,
    TextToImageRequest,
)
from .openapi import PNG, Link, Operation, Reply, openapi_document
from .translate import (
    NO_INPUTS,
    RequestError,
    artifacts_of,
    retry_after,
    save_request_images,
    spec_for,
    stop_for,
    strength_for,
)

log = logging.getLogger(__name__)

BodyT = TypeVar("BodyT", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CLIENT = "http"
# Where a request keeps the member its key acts as, once known.
HOLDER = web.RequestKey("holder", KeyHolder)
# `credits` when nothing limits spending (JSON has no infinity).
UNLIMITED_CREDITS = 1e9
# Retry-After when no measured pace says better.
DEFAULT_RETRY_SECONDS = 10.0
_PROMPT_FIELD = re.compile(r"text_prompts\[([0-9]{1,4})\]\[(text|weight)\]")
# What decoding a body the client sent can raise beyond aiohttp's own HTTP errors: a
# multipart or JSON it cannot read (ValueError, UnicodeDecodeError among them), an
# unknown charset (LookupError), an unknown transfer encoding (RuntimeError), JSON
# nested past the parser's depth (RecursionError, a RuntimeError).
_UNDECODABLE = (ValueError, LookupError, RuntimeError)


def _errors(*statuses: int) -> dict[int, Reply]:
    meaning = {
        400: "bad_request (or invalid_*): a field is invalid; the message names it",
        401: "unauthorized: the API key is missing, unknown or revoked",
        403: "permission_denied: the key's member is banned or paused",
        404: "not_found: no such engine or job",
        409: "conflict: the job ended (or was cancelled by someone else) before it could",
        413: "payload_too_large: the body is over [http] max_body_mb",
        429: "rate_limited, quota_exceeded or queue_full: wait Retry-After seconds",
        500: "server_error: the id is in the bot's log",
    }
    return {
        status: Reply(meaning[status], ErrorBody, headers=("Retry-After",) if status == 429 else ())
        for status in statuses
    }


_GENERATION_ERRORS = _errors(400, 401, 403, 404, 409, 413, 429, 500)
_GENERATED = Reply(
    "The images: JSON artifacts, or PNG bytes with Accept: image/png",
    GenerationResponse,
    png=True,
    headers=("Finish-Reason", "Seed"),
)
_ENGINE = ("engine_id",)

_READ_ERRORS = _errors(401, 403, 429, 500)
_JOB_ERRORS = _errors(401, 403, 404, 429, 500)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        method="GET",
        path="/v1/engines/list",
        operation_id="listEngines",
        summary="The configured models, as engines",
        tag="v1/engines",
        handler="list_engines",
        replies={200: Reply("The engines", EngineList), **_READ_ERRORS},
    ),
    Operation(
        method="GET",
        path="/v1/user/account",
        operation_id="userAccount",
        summary="The member the key acts as",
        tag="v1/user",
        handler="account",
        replies={200: Reply("The account", Account), **_READ_ERRORS},
    ),
    Operation(
        method="GET",
        path="/v1/user/balance",
        operation_id="userBalance",
        summary="What is left of today's quota",
        tag="v1/user",
        handler="balance",
        replies={200: Reply("The balance", Balance), **_READ_ERRORS},
    ),
    Operation(
        method="POST",
        path="/v1/generation/{engine_id}/text-to-image",
        operation_id="textToImage",
        summary="Images from text",
        tag="v1/generation",
        handler="text_to_image",
        replies={200: _GENERATED, **_GENERATION_ERRORS},
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
        handler="image_to_image",
        replies={200: _GENERATED, **_GENERATION_ERRORS},
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
        handler="masking",
        replies={200: _GENERATED, **_GENERATION_ERRORS},
        form_body=MaskingRequest,
        accept_png=True,
        path_parameters=_ENGINE,
    ),
    Operation(
        method="POST",
        path="/v1/jobs",
        operation_id="createJob",
        summary="Queue a generation and answer at once",
        description="A text-to-image body as JSON, or an image-to-image body as multipart"
        " (masking when it has mask_source); `engine_id` picks the model.",
        tag="v1/jobs",
        handler="create_job",
        replies={
            202: Reply(
                "Queued (or blocked by moderation)",
                JobCreated,
                headers=("Location",),
                links=(
                    Link("getJob", "job_id", "$response.body#/id"),
                    Link("cancelJob", "job_id", "$response.body#/id"),
                ),
            ),
            **_errors(400, 401, 403, 404, 413, 429, 500),
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
        handler="get_job",
        replies={200: Reply("The job", JobView), **_JOB_ERRORS},
        path_parameters=("job_id",),
    ),
    Operation(
        method="DELETE",
        path="/v1/jobs/{job_id}",
        operation_id="cancelJob",
        summary="Cancel a queued or running job",
        tag="v1/jobs",
        handler="cancel_job",
        replies={
            200: Reply("The job, cancelled", JobView),
            **_errors(401, 403, 404, 409, 429, 500),
        },
        path_parameters=("job_id",),
    ),
    Operation(
        method="GET",
        path="/healthz",
        operation_id="health",
        summary="Engine alive, database writable",
        tag="health",
        handler="healthz",
        replies={200: Reply("Healthy", Health), 503: Reply("Unhealthy", Health)},
        auth=False,
    ),
)


class CannotListen(Exception):
    """The configured address is taken, or not this machine's."""


class ApiError(Exception):
    """An answer in Stability's error shape: `name` is its class, `message` names the field."""

    def __init__(
        self, status: int, name: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.name = name
        self.message = message
        self.headers = headers or {}


class JobWatch:
    """The JobListener of the HTTP API: wakes requests waiting for their job, and keeps the
    progress of running HTTP jobs for `GET /v1/jobs/{id}`. Every call returns at once."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[asyncio.Future[Job]]] = {}
        self._progress: dict[str, Progress | None] = {}

    def job_started(self, job: Job) -> None:
        if job.client == CLIENT:
            self._progress[job.id] = None

    def job_progress(self, job_id: str, progress: Progress) -> None:
        if job_id in self._progress:
            self._progress[job_id] = progress

    def job_finished(self, job: Job) -> None:
        self._progress.pop(job.id, None)
        for future in self._waiting.pop(job.id, []):
            if not future.done():
                future.set_result(job)

    def expect(self, job_id: str) -> asyncio.Future[Job]:
        """A future the job's end resolves (register it before reading the job's state)."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(job_id, []).append(future)
        return future

    def forget(self, job_id: str, future: asyncio.Future[Job]) -> None:
        waiting = self._waiting.get(job_id, [])
        if future in waiting:
            waiting.remove(future)
        if not waiting:
            self._waiting.pop(job_id, None)

    def progress(self, job_id: str) -> Progress | None:
        return self._progress.get(job_id)


@dataclass(frozen=True)
class ApiServices:
    """What the HTTP API reads and changes, built once in bot.app."""

    config: Config
    jobs: JobService
    keys: ApiKeyStore
    users: UserStore
    quotas: QuotaStore
    moderation: Moderation
    health: HealthStore


def _version() -> str:
    try:
        return version("atelier-bot")
    except PackageNotFoundError:
        return "0"


def api_document(engines: list[str]) -> dict[str, Any]:
    """The OpenAPI document served at /openapi.json; `engines`: the configured models."""
    return openapi_document(
        OPERATIONS,
        "Atelier HTTP API",
        _version(),
        "Stability REST API v1 compatible generation on a server's own Atelier, sharing its"
        " GPU queue, quotas, moderation and audit with Discord. A key made with /apikey"
        " create acts as its member.",
        engines,
    )


class HttpApi:
    """The aiohttp server; `start` and `stop` are called by bot.app with the bot's own."""

    def __init__(self, services: ApiServices) -> None:
        self._services = services
        self._config = services.config
        self.watch = JobWatch()
        per_minute = services.config.http.requests_per_minute
        # Per key, all requests alike; a burst of a minute's worth (0: no limit).
        self._rate = Buckets("key", burst=per_minute, per_minute=per_minute)
        self._tasks: set[asyncio.Task[None]] = set()
        # Jobs whose synchronous request is waiting for them right now.
        self._awaited: set[str] = set()
        # Set by `stop`: a job it cuts off is the bot's doing, refunded in full.
        self._stopping = False
        self._document = api_document(sorted(services.config.models))
        # Written on a timer while the API listens; /healthz only reads it.
        self._heartbeat = DatabaseHeartbeat(services.health, CLIENT)
        self._runner: web.AppRunner | None = None
        self.url = ""

    def application(self) -> web.Application:
        app = web.Application(
            client_max_size=int(self._config.http.max_body_mb * 2**20),
            middlewares=[self._errors],
        )
        for operation in OPERATIONS:
            app.router.add_route(operation.method, operation.path, getattr(self, operation.handler))
        app.router.add_get("/openapi.json", self.openapi)
        return app

    async def start(self) -> None:
        """Cancel the jobs of synchronous requests a stop cut off, then listen."""
        await self._cancel_orphans()
        await self._heartbeat.start()
        # A client that disconnects cancels its handler, and so its job. At a stop,
        # waiting requests get the same grace as a running batch before that.
        self._runner = web.AppRunner(
            self.application(),
            handler_cancellation=True,
            shutdown_timeout=self._config.queue.stop_grace_seconds,
        )
        await self._runner.setup()
        http = self._config.http
        site = web.TCPSite(self._runner, http.host, http.port)
        try:
            await site.start()
        except OSError as error:
            await self.stop()
            raise CannotListen(
                f"cannot serve the HTTP API on {http.host}:{http.port}: {error.strerror or error}"
                " (see [http] host and port)"
            ) from error
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        log.info(
            "HTTP API listening on %s (OpenAPI document at %s/openapi.json)", self.url, self.url
        )

    async def stop(self) -> None:
        """Stop listening. Waiting requests have `[queue] stop_grace_seconds` to get their
        answer; then they are cut off, and their jobs cancelled and refunded in full."""
        self._stopping = True
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        # aiohttp cancels cut-off handlers without waiting for them: their jobs are
        # cancelled here, whichever of the two comes first (see _cut_off).
        for job_id in list(self._awaited):
            self._awaited.discard(job_id)
            await self._abandon(job_id)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self._heartbeat.stop()

    # -- the door ---------------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as error:
            await self._audit_refusal(request, error)
            return self._error_response(request, error)
        except (HttpProcessingError, web.RequestPayloadError) as error:
            # The body's framing or encoding is broken (chunks, gzip, a part's headers).
            unreadable = _unreadable(request, error, "the request could not be read")
            await self._audit_refusal(request, unreadable)
            return self._error_response(request, unreadable)
        except web.HTTPRequestEntityTooLarge:
            limit = self._config.http.max_body_mb
            too_large = ApiError(
                413, "payload_too_large", f"body: the request is over the {limit:g} MB limit"
            )
            await self._audit_refusal(request, too_large)
            return self._error_response(request, too_large)
        except web.HTTPException as http_error:  # aiohttp's own: unknown path, wrong method
            if http_error.status < 400:
                raise
            names = {404: "not_found", 405: "method_not_allowed"}
            headers = (
                {"Allow": http_error.headers["Allow"]} if "Allow" in http_error.headers else {}
            )
            refused = ApiError(
                http_error.status,
                names.get(http_error.status, "bad_request"),
                f"{request.method} {request.path}: {http_error.reason}",
                headers,
            )
            return self._error_response(request, refused)
        except Exception:
            error_id = str(uuid.uuid4())
            log.exception(
                "http %s %s: unexpected error (error id %s)", request.method, request.path, error_id
            )
            body = ErrorBody(
                id=error_id,
                name="server_error",
                message="An unexpected server error occurred; the admin can find it in the"
                f" bot's log by the id {error_id}.",
            )
            return web.json_response(body.model_dump(), status=500)

    def _error_response(self, request: web.Request, error: ApiError) -> web.Response:
        error_id = str(uuid.uuid4())
        log.info(
            "http %s %s: %d %s (error id %s): %s",
            request.method,
            request.path,
            error.status,
            error.name,
            error_id,
            error.message,
        )
        body = ErrorBody(id=error_id, name=error.name, message=error.message)
        return web.json_response(body.model_dump(), status=error.status, headers=error.headers)

    async def _audit_refusal(self, request: web.Request, error: ApiError) -> None:
        """A member's request refused for what it asked (bad input, unknown engine or job,
        a full queue), audited like a refused command. Not audited here: requests with
        no valid key (no member to name), the rate limit (a flood would become writes),
        bans and quotas (audited where they are decided)."""
        holder = request.get(HOLDER)
        if holder is None or error.name in ("rate_limited", "permission_denied"):
            return
        if error.name == "quota_exceeded":
            return
        await self._services.jobs.store.record_refusal(
            "http.refused",
            holder.user_id,
            holder.guild_id,
            None,
            error.message,
            params={
                "client": CLIENT,
                "key_id": holder.key_id,
                "path": request.path,
                "status": error.status,
                "name": error.name,
            },
        )

    async def _member(self, request: web.Request) -> KeyHolder:
        """Who the request's key acts as: 401 without a valid key, 403 for a ban or a timed
        pause, 429 over the key's request rate."""
        header = request.headers.get("Authorization", "").strip()
        key = header[7:].strip() if header[:7].lower() == "bearer " else header
        if not key:
            raise ApiError(
                401,
                "unauthorized",
                "Authorization: missing; send `Authorization: Bearer <key>`"
                " (make a key in Discord with /apikey create)",
            )
        holder = await self._services.keys.authenticate(key)
        if holder is None:
            raise ApiError(401, "unauthorized", "Authorization: the API key is unknown or revoked")
        if holder.ban_reason is not None:
            reason = f"You cannot use this bot: {holder.ban_reason}"
            await self._services.jobs.store.record_refusal(
                "http.refused",
                holder.user_id,
                holder.guild_id,
                None,
                reason,
                params={"client": CLIENT, "key_id": holder.key_id, "path": request.path},
            )
            raise ApiError(403, "permission_denied", reason)
        paused = await self._services.users.cooldown_until(holder.user_id)
        if paused is not None:
            reason = f"You are paused until {paused.isoformat()} after repeated blocked prompts."
            await self._services.jobs.store.record_refusal(
                "http.refused",
                holder.user_id,
                holder.guild_id,
                None,
                reason,
                params={"client": CLIENT, "key_id": holder.key_id, "path": request.path},
                kind="paused",
            )
            wait = (paused - utcnow()).total_seconds()
            raise ApiError(403, "permission_denied", reason, {"Retry-After": retry_after(wait)})
        request[HOLDER] = holder
        limited = self._rate.acquire(holder.key_id, asyncio.get_running_loop().time())
        if limited is not None:
            per_minute = self._config.http.requests_per_minute
            raise ApiError(
                429,
                "rate_limited",
                f"Authorization: this key made its {per_minute} requests a minute; wait a moment",
                {"Retry-After": retry_after(limited.retry_after)},
            )
        return holder

    def _engine(self, engine_id: str) -> str:
        if engine_id not in self._config.models:
            known = ", ".join(sorted(self._config.models))
            raise ApiError(
                404,
                "not_found",
                f"engine_id: the specified engine (ID {engine_id}) was not found; engines: {known}",
            )
        return engine_id

    async def _json(self, request: web.Request, model: type[BodyT]) -> BodyT:
        try:
            data = await request.json()
        except _UNDECODABLE as error:
            raise _unreadable(request, error, "not valid JSON (send application/json)") from None
        return _validated(model, data)

    async def _form(self, request: web.Request, model: type[BodyT]) -> BodyT:
        if request.content_type not in ("multipart/form-data", "application/x-www-form-urlencoded"):
            raise ApiError(400, "bad_request", "body: send multipart/form-data")
        fields: Sequence[tuple[str, object]]
        try:
            if request.content_type == "multipart/form-data":
                fields = await self._multipart(request)
            else:
                fields = list((await request.post()).items())
        except _UNDECODABLE as error:
            raise _unreadable(
                request, error, "not a readable form (send multipart/form-data with named parts)"
            ) from None
        return _validated(model, _form_values(fields))

    async def _multipart(self, request: web.Request) -> list[tuple[str, str | bytes]]:
        """A multipart body's fields, read in memory within `[http] max_body_mb`: files as
        bytes, text as str. Not aiohttp's `request.post()`, which spools files to temporary
        files and leaves them open when a later part cannot be read."""
        limit = int(self._config.http.max_body_mb * 2**20)
        reader = await request.multipart()
        fields: list[tuple[str, str | bytes]] = []
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or part.name is None:
                raise ValueError("a nested multipart, or a part without a name")
            raw = bytearray()
            while chunk := await part.read_chunk():
                raw += chunk
                if request.content.total_bytes > limit:
                    raise web.HTTPRequestEntityTooLarge(limit, request.content.total_bytes)
            data = bytes(part.decode(raw))  # its transfer encoding (base64, quoted-printable)
            content_type = part.headers.get(hdrs.CONTENT_TYPE)
            if part.filename is None and (content_type is None or content_type.startswith("text/")):
                fields.append((part.name, data.decode(part.get_charset("utf-8"))))
            else:
                fields.append((part.name, data))
        return fields

    # -- Stability v1: engines and user ----------------------------------------------------

    async def list_engines(self, request: web.Request) -> web.Response:
        await self._member(request)
        engines = [
            Engine(
                id=name,
                name=name,
                description=f"Atelier model `{name}`: {model.width}x{model.height},"
                f" {model.steps} steps, {model.sampler} by default",
            )
            for name, model in sorted(self._config.models.items())
        ]
        return _json_response(EngineList(engines))

    async def account(self, request: web.Request) -> web.Response:
        holder = await self._member(request)
        organizations = (
            [
                Organization(
                    id=str(holder.guild_id),
                    name=f"Discord server {holder.guild_id}",
                    role="MEMBER",
                    is_default=True,
                )
            ]
            if holder.guild_id is not None
            else []
        )
        account = Account(
            id=str(holder.user_id),
            name=holder.user_name,
            email="",
            organizations=organizations,
            key_id=holder.key_id,
        )
        return _json_response(account)

    async def balance(self, request: web.Request) -> web.Response:
        holder = await self._member(request)
        status = await self._services.quotas.status(holder.user_id, holder.role_ids)
        limits, usage = status.limits, status.usage
        pricing = self._services.quotas.rules.pricing
        money_left: list[float] = []
        if limits.cost_per_day is not None:
            money_left.append(limits.cost_per_day - usage.cost)
        if limits.gpu_seconds_per_day is not None and pricing.price_per_gpu_hour > 0:
            money_left.append(pricing.cost(limits.gpu_seconds_per_day - usage.gpu_seconds))
        images_left = (
            None if limits.images_per_day is None else max(0, limits.images_per_day - usage.images)
        )
        seconds_left = (
            None
            if limits.gpu_seconds_per_day is None
            else max(0.0, limits.gpu_seconds_per_day - usage.gpu_seconds)
        )
        balance = Balance(
            credits=max(0.0, min(money_left)) if money_left else UNLIMITED_CREDITS,
            currency=status.currency,
            unlimited=not money_left,
            images_left=images_left,
            gpu_seconds_left=seconds_left,
            resets_at=status.resets_at,
        )
        return _json_response(balance)

    # -- Stability v1: generation ----------------------------------------------------------

    async def text_to_image(self, request: web.Request) -> web.StreamResponse:
        holder = await self._member(request)
        engine = self._engine(request.match_info["engine_id"])
        body = await self._json(request, TextToImageRequest)
        png = self._wants_png(request, body.samples)
        spec = await self._spec(
            holder, body, body.text_prompts, engine, size=(body.width, body.height)
        )
        return await self._generate_now(holder, spec, png)

    async def image_to_image(self, request: web.Request) -> web.StreamResponse:
        holder = await self._member(request)
        engine = self._engine(request.match_info["engine_id"])
        body = await self._form(request, ImageToImageRequest)
        png = self._wants_png(request, body.samples)
        inputs = await self._save_images(body.init_image)
        spec = await self._spec(
            holder,
            body,
            body.text_prompts,
            engine,
            inputs=inputs,
            strength=strength_for(
                body.init_image_mode, body.image_strength, body.step_schedule_start
            ),
            stop=stop_for(body.step_schedule_end),
        )
        return await self._generate_now(holder, spec, png)

    async def masking(self, request: web.Request) -> web.StreamResponse:
        holder = await self._member(request)
        engine = self._engine(request.match_info["engine_id"])
        body = await self._form(request, MaskingRequest)
        png = self._wants_png(request, body.samples)
        inputs = await self._save_images(body.init_image, body.mask_image, body.mask_source)
        spec = await self._spec(holder, body, body.text_prompts, engine, inputs=inputs)
        return await self._generate_now(holder, spec, png)

    def _wants_png(self, request: web.Request, samples: int) -> bool:
        accept = request.headers.get("Accept", "")
        png = PNG in accept and "application/json" not in accept
        if png and samples > 1:
            raise ApiError(
                400,
                "invalid_samples",
                "samples: must be 1 with Accept: image/png; ask for JSON to get several images",
            )
        return png

    async def _save_images(
        self,
        init_image: bytes,
        mask_image: bytes | None = None,
        mask_source: MaskSource | None = None,
    ) -> Inputs:
        data_dir = self._config.storage.data_dir
        folder = data_dir / "inputs" / secrets.token_hex(8)
        max_bytes = int(self._config.generation.max_attachment_mb * 2**20)
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

    async def _spec(
        self,
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
        personal = await self._services.users.defaults(holder.user_id)
        try:
            return spec_for(
                body,
                prompts,
                engine,
                self._config.models,
                personal,
                self._config.styles,
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

    async def _generate_now(self, holder: KeyHolder, spec: JobSpec, png: bool) -> web.Response:
        """Queue the job, wait for its end on this connection, answer with its images."""
        blocked = await self._blocked(holder, spec)
        if blocked is not None:
            return await self._generated(blocked, png)
        # A client that leaves while the job is being queued must not leave it behind:
        # the submission goes on, shielded, and its job is cancelled once it is in.
        submission = asyncio.ensure_future(self._submit(holder, spec, synchronous=True))
        try:
            submitted = await asyncio.shield(submission)
        except asyncio.CancelledError:
            self._spawn(self._abandon_submission(submission), "abandon-submission")
            raise
        job_id = submitted.job.id
        self._awaited.add(job_id)
        try:
            job = await self._finished(job_id)
        except asyncio.CancelledError:
            self._cut_off(job_id)
            raise
        except BaseException:
            self._awaited.discard(job_id)
            raise
        self._awaited.discard(job_id)
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
        return await self._generated(job, png)

    async def _generated(self, job: Job, png: bool) -> web.Response:
        artifacts = await asyncio.to_thread(artifacts_of, job, self._read_output)
        if not png:
            return _json_response(GenerationResponse(artifacts=artifacts))
        first = artifacts[0]
        data = await asyncio.to_thread(base64.b64decode, first.base64)
        return web.Response(
            body=data,
            content_type=PNG,
            headers={"Finish-Reason": str(first.finishReason), "Seed": str(first.seed)},
        )

    def _read_output(self, relative: str) -> bytes | None:
        path = self._services.jobs.output_path(relative)
        try:
            return path.read_bytes()
        except OSError:
            return None

    async def _blocked(self, holder: KeyHolder, spec: JobSpec) -> Job | None:
        """The job recorded as blocked when the prompt holds a term the key's server (or
        every server) blocks; None when it may go."""
        screened = await self._services.moderation.screen(
            Actor(holder.user_id, holder.guild_id),
            [ScreenedText(TextKind.PROMPT, f"{spec.prompt}\n{spec.negative_prompt}")],
            CLIENT,
        )
        if screened is None:
            return None
        term = screened.term
        for path in (spec.init_image, spec.mask_image):
            if path is not None:  # the request's images were saved for a job that never runs
                folder = self._config.storage.data_dir / Path(path).parent
                await asyncio.to_thread(shutil.rmtree, folder, True)
        reason = f"the prompt contains `{term}`, which this server does not allow"
        job = await self._services.jobs.store.create_blocked(
            secrets.token_hex(5),
            self._requester(holder, synchronous=False),
            spec.model_dump(mode="json"),
            spec.model,
            spec.seeds,
            reason,
        )
        log.info("job %s: blocked at the HTTP door (key %d)", job.id, holder.key_id)
        return job

    def _requester(self, holder: KeyHolder, synchronous: bool) -> Requester:
        return Requester.over_http(
            user_id=holder.user_id,
            user_name=holder.user_name,
            guild_id=holder.guild_id,
            role_ids=holder.role_ids,
            api_key_id=holder.key_id,
            synchronous=synchronous,
        )

    async def _submit(self, holder: KeyHolder, spec: JobSpec, synchronous: bool) -> Submitted:
        """The job service's own door: same admission, queue, batches and ledger as Discord."""
        service = self._services.jobs
        try:
            return await service.submit(spec, self._requester(holder, synchronous))
        except UserBanned as banned:
            raise ApiError(403, "permission_denied", banned.message) from None
        except OverQuotaError as over:
            quota = over.over
            if quota.resets_at is not None:
                wait = (quota.resets_at - utcnow()).total_seconds()
                when = f" It resets at {quota.resets_at.isoformat()}."
            else:
                wait, when = await self._seconds_per_job(), " Wait for one of your jobs to finish."
            raise ApiError(
                429,
                "quota_exceeded",
                f"samples: this would go over your {quota.limit}: {quota.left}.{when}",
                {"Retry-After": retry_after(wait)},
            ) from None
        except QueueFull as full:
            waiting = await service.store.waiting_count()
            wait = waiting * await self._seconds_per_job()
            raise ApiError(
                429, "queue_full", full.message, {"Retry-After": retry_after(wait)}
            ) from None
        except Refused as refused:
            raise ApiError(429, "quota_exceeded", refused.message) from None

    async def _seconds_per_job(self) -> float:
        """About how long a job takes from the queue's side: the measured pace, or
        DEFAULT_RETRY_SECONDS before there is one."""
        per_job = (await self._services.jobs.pace()).seconds_per_job()
        return DEFAULT_RETRY_SECONDS if per_job is None else per_job

    async def _finished(self, job_id: str) -> Job:
        """The job once it ended. The waiter is registered before the state is read, so an
        end between the two cannot be missed."""
        future = self.watch.expect(job_id)
        try:
            job = await self._services.jobs.store.get(job_id)
            if job.state.finished:
                return job
            return await future
        finally:
            self.watch.forget(job_id, future)

    def _cut_off(self, job_id: str) -> None:
        """The client went away (or the server stops): nobody will read the answer, so the
        job is cancelled, unless `stop` did it already. A client that left pays for the
        GPU time its job used, as a member's cancel does; a stop refunds it in full."""
        if job_id in self._awaited:
            self._awaited.discard(job_id)
            self._spawn(self._abandon(job_id), f"abandon-{job_id}")

    async def _abandon(self, job_id: str) -> None:
        if await self._services.jobs.cancel(job_id, None, refund=self._stopping):
            cause = "the API stopped" if self._stopping else "its HTTP client went away"
            log.info("job %s: %s; cancelled", job_id, cause)

    async def _abandon_submission(self, submission: asyncio.Future[Submitted]) -> None:
        try:
            submitted = await submission
        except Exception:
            return  # refused: nothing was queued
        await self._abandon(submitted.job.id)

    async def _cancel_orphans(self) -> None:
        for job in await self._services.jobs.store.unfinished():
            if job.synchronous:
                await self._abandon(job.id)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the job API --------------------------------------------------------------------------

    async def create_job(self, request: web.Request) -> web.Response:
        holder = await self._member(request)
        personal_model = (await self._services.users.defaults(holder.user_id)).get("model")
        if request.content_type == "application/json":
            json_body = await self._json(request, JobRequest)
            engine = self._engine(json_body.engine_id or self._default_engine(personal_model))
            spec = await self._spec(
                holder,
                json_body,
                json_body.text_prompts,
                engine,
                size=(json_body.width, json_body.height),
            )
        else:
            form_body = await self._form(request, ImageJobRequest)
            engine = self._engine(form_body.engine_id or self._default_engine(personal_model))
            inputs = await self._save_images(
                form_body.init_image, form_body.mask_image, form_body.mask_source
            )
            spec = await self._spec(
                holder,
                form_body,
                form_body.text_prompts,
                engine,
                inputs=inputs,
                strength=strength_for(
                    form_body.init_image_mode,
                    form_body.image_strength,
                    form_body.step_schedule_start,
                ),
                stop=stop_for(form_body.step_schedule_end),
            )
        blocked = await self._blocked(holder, spec)
        if blocked is not None:
            created = JobCreated(
                id=blocked.id, status=blocked.state, position=None, eta_seconds=None
            )
            return _json_response(created, 202, {"Location": f"/v1/jobs/{blocked.id}"})
        submitted = await self._submit(holder, spec, synchronous=False)
        job = submitted.job
        created = JobCreated(
            id=job.id,
            status=job.state,
            position=submitted.queue_position,
            eta_seconds=await self._eta(job.id, submitted.queue_position),
        )
        return _json_response(created, 202, {"Location": f"/v1/jobs/{job.id}"})

    def _default_engine(self, personal_model: object) -> str:
        if isinstance(personal_model, str) and personal_model in self._config.models:
            return personal_model
        return self._config.engine.default_model

    async def get_job(self, request: web.Request) -> web.Response:
        holder = await self._member(request)
        job = await self._own_job(holder, request.match_info["job_id"])
        return _json_response(await self._view(job))

    async def cancel_job(self, request: web.Request) -> web.Response:
        holder = await self._member(request)
        job = await self._own_job(holder, request.match_info["job_id"])
        # Answered once the job ended (a running one stops within a step), so the answer
        # is the outcome: a job that finished first (its result on its way) is a 409.
        outcome = await self._services.jobs.cancel_and_wait(job.id, holder.user_id)
        if outcome.too_late:
            raise ApiError(409, "conflict", f"job_id: job {job.id} already {outcome.job.state}")
        return _json_response(await self._view(outcome.job))

    async def _own_job(self, holder: KeyHolder, job_id: str) -> Job:
        """The member's job; another member's is as unknown as a missing one."""
        try:
            job = await self._services.jobs.store.get(job_id)
        except JobNotFound:
            job = None
        if job is None or job.user_id != holder.user_id:
            raise ApiError(404, "not_found", f"job_id: no job {job_id} of yours")
        return job

    async def _view(self, job: Job) -> JobView:
        position = None
        if job.state is JobState.QUEUED:
            position = await self._services.jobs.queue_position(job.id)
        progress = self.watch.progress(job.id) if job.state is JobState.RUNNING else None
        artifacts = (
            await asyncio.to_thread(artifacts_of, job, self._read_output)
            if job.state.finished
            else None
        )
        eta = None
        if job.state is JobState.QUEUED:
            eta = await self._eta(job.id, position or 1)
        elif job.state is JobState.RUNNING:
            eta = await self._eta(job.id, 1, progress)
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
        )

    async def _eta(self, job_id: str, position: int, progress: Progress | None = None) -> float:
        """About how long until the job is done: the jobs up to it at the queue's measured
        pace over every engine, or at its own GPU-seconds estimate before there is a pace."""
        per_job = (await self._services.jobs.pace()).seconds_per_job()
        if per_job is None:
            reserved = await self._services.jobs.store.reserved_seconds(job_id)
            per_job = (reserved or DEFAULT_RETRY_SECONDS) / len(self._config.engine.devices)
        left = 1.0 - progress.step / progress.total if progress else 1.0
        return seconds_until_done(per_job, position, left)

    # -- health and the document ---------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        database = await self._heartbeat.health()
        engines = [
            EngineHealth(
                device=device,
                alive=status is not None,
                running_job=status.running_jobs[0] if status and status.running_jobs else None,
                loaded=[model.name for model in status.loaded] if status else [],
            )
            for device, status in await self._services.jobs.engine_status()
        ]
        ok = database.writable
        health = Health(status="ok" if ok else "error", database=database.detail, engines=engines)
        return _json_response(health, 200 if ok else 503)

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(self._document)


def _validated(model: type[BodyT], data: Any) -> BodyT:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        field = field_name(first["loc"])
        name = "bad_request"
        if first["type"] == "multiple_of" and field in ("width", "height"):
            name = "invalid_height_or_width"
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "unknown field"
        elif first["type"] == "missing":
            message = "is required"
        raise ApiError(400, name, f"{field}: {message}") from None


def field_name(loc: tuple[int | str, ...]) -> str:
    """A validation error's place as the client wrote it: `text_prompts[1][text]`."""
    if not loc:
        return "body"
    head, *rest = loc
    return str(head) + "".join(f"[{part}]" for part in rest)


def _unreadable(request: web.Request, error: Exception, what: str) -> ApiError:
    """A 400 for a body that cannot be read; what went wrong stays in the log (its text
    can quote the client's bytes), the answer says what to send."""
    log.info(
        "http %s %s: unreadable body: %s: %.200s",
        request.method,
        request.path,
        type(error).__name__,
        error,
    )
    return ApiError(400, "bad_request", f"body: {what}")


def _form_values(fields: Sequence[tuple[str, object]]) -> dict[str, Any]:
    """A form's fields as the request models read them: the
    `text_prompts[i][text|weight]` fields as a list in index order (a repeated field:
    the last wins, as in Stability's API)."""
    values: dict[str, Any] = {}
    prompts: dict[int, dict[str, Any]] = {}
    for name, content in fields:
        match = _PROMPT_FIELD.fullmatch(name)
        if match:
            prompts.setdefault(int(match[1]), {})[match[2]] = content
        else:
            values[name] = content
    if prompts:
        values["text_prompts"] = [prompts[index] for index in sorted(prompts)]
    values.pop("extras", None)  # accepted and ignored, as in JSON bodies
    return values


def _json_response(
    body: BaseModel, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(body.model_dump(mode="json"), status=status, headers=headers)
