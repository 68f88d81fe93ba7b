"""Refusals in Stability's error shape: ApiError, the statuses the API answers, and the
middleware that turns every failure of a request into one JSON error body."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_request import BaseRequest

from ..ops.logs import without_links
from .models import ErrorBody
from .openapi import Reply

# The door's lines keep the logger name they had before the door was split up.
log = logging.getLogger("bot.http.server")

# What each error status means, as the OpenAPI document lists it.
MEANINGS = {
    400: "bad_request (or invalid_*): a field is invalid; the message names it",
    401: "unauthorized: the API key is missing, unknown or revoked",
    403: "permission_denied: the key's member is banned or paused; content_moderation: a"
    " blocked term",
    404: "not_found: no such engine or job",
    409: "conflict: the job is not in a state the request applies to (it ended, or has not)",
    410: "gone: the job's images (or the image it started from) are no longer stored",
    413: "payload_too_large: the body is over [http] max_body_mb",
    429: "rate_limited, quota_exceeded or queue_full: wait Retry-After seconds",
    500: "server_error: the id is in the bot's log",
}

# Told of a request refused for what it asked, before its error is answered.
OnRefused = Callable[[web.Request, "ApiError"], Awaitable[None]]


class ApiError(Exception):
    """An answer in Stability's error shape: `name` is its class, `message` names the field."""

    def __init__(
        self,
        status: int,
        name: str,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        audited: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.name = name
        self.message = message
        self.headers = headers or {}
        # A refusal the core (or the store) audited already, not audited again.
        self.audited = audited


def error_replies(*statuses: int) -> dict[int, Reply]:
    """The document's replies for these error statuses."""
    return {
        status: Reply(
            MEANINGS[status], ErrorBody, headers=("Retry-After",) if status == 429 else ()
        )
        for status in statuses
    }


def logged_path(request: web.Request) -> str:
    """The request's path as a log line or the audit may hold it: an editor link's token
    (the credential in the Vary (Region) editor's address) taken out."""
    return without_links(request.path)


class AccessLog(AbstractAccessLogger):
    """aiohttp's access log (`aiohttp.access`, off unless an admin turns it on), one line
    a request, with the path as `logged_path` gives it."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %d %.3f s',
            request.remote,
            request.method,
            without_links(request.path),
            response.status,
            time,
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def unreadable(request: web.Request, error: Exception, what: str) -> ApiError:
    """A 400 for a body that cannot be read; what went wrong stays in the log (its text
    can quote the client's bytes), the answer says what to send."""
    log.info(
        "http %s %s: unreadable body: %s: %.200s",
        request.method,
        logged_path(request),
        type(error).__name__,
        error,
    )
    return ApiError(400, "bad_request", f"body: {what}")


def error_middleware(max_body_mb: float, refused: OnRefused) -> Middleware:
    """The outermost middleware: every failure of a request answered as an ErrorBody;
    `refused` is told of those refused for what they asked."""

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as error:
            await refused(request, error)
            return error_response(request, error)
        except (HttpProcessingError, web.RequestPayloadError) as error:
            # The body's framing or encoding is broken (chunks, gzip, a part's headers).
            cannot_read = unreadable(request, error, "the request could not be read")
            await refused(request, cannot_read)
            return error_response(request, cannot_read)
        except web.HTTPRequestEntityTooLarge:
            too_large = ApiError(
                413, "payload_too_large", f"body: the request is over the {max_body_mb:g} MB limit"
            )
            await refused(request, too_large)
            return error_response(request, too_large)
        except web.HTTPException as http_error:  # aiohttp's own: unknown path, wrong method
            if http_error.status < 400:
                raise
            names = {404: "not_found", 405: "method_not_allowed"}
            headers = (
                {"Allow": http_error.headers["Allow"]} if "Allow" in http_error.headers else {}
            )
            routing = ApiError(
                http_error.status,
                names.get(http_error.status, "bad_request"),
                f"{request.method} {logged_path(request)}: {http_error.reason}",
                headers,
            )
            return error_response(request, routing)
        except Exception:
            error_id = str(uuid.uuid4())
            log.exception(
                "http %s %s: unexpected error (error id %s)",
                request.method,
                logged_path(request),
                error_id,
            )
            body = ErrorBody(
                id=error_id,
                name="server_error",
                message="An unexpected server error occurred; the admin can find it in the"
                f" bot's log by the id {error_id}.",
            )
            return web.json_response(body.model_dump(), status=500)

    return errors


def error_response(request: web.Request, error: ApiError) -> web.Response:
    error_id = str(uuid.uuid4())
    log.info(
        "http %s %s: %d %s (error id %s): %s",
        request.method,
        logged_path(request),
        error.status,
        error.name,
        error_id,
        error.message,
    )
    body = ErrorBody(id=error_id, name=error.name, message=error.message)
    return web.json_response(body.model_dump(), status=error.status, headers=error.headers)
