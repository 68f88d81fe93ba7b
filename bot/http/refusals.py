"""The HTTP door's rendering of a core Refusal (bot.core.refusals): one table from its
kind to a status and Stability's error name; the message is the refusal's own sentence
with `{until}` written in ISO 8601, and Retry-After says when asking again may work."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from ..core.refusals import Refusal, RefusalKind
from .errors import ApiError
from .translate import retry_after


class Rendering(NamedTuple):
    status: int
    name: str


RENDERINGS: dict[RefusalKind, Rendering] = {
    RefusalKind.RATE_LIMITED: Rendering(429, "rate_limited"),
    RefusalKind.BANNED: Rendering(403, "permission_denied"),
    RefusalKind.PAUSED: Rendering(403, "permission_denied"),
    RefusalKind.BLOCKED: Rendering(403, "content_moderation"),
    RefusalKind.BAD_INPUT: Rendering(400, "bad_request"),
    RefusalKind.OVER_QUOTA: Rendering(429, "quota_exceeded"),
    RefusalKind.QUEUE_FULL: Rendering(429, "queue_full"),
    RefusalKind.NOT_FOUND: Rendering(404, "not_found"),
    RefusalKind.NOT_READY: Rendering(409, "conflict"),
    RefusalKind.GONE: Rendering(410, "gone"),
    RefusalKind.NOT_ALLOWED: Rendering(403, "permission_denied"),
    RefusalKind.TOO_LATE: Rendering(409, "conflict"),
}


def api_error(refusal: Refusal, now: datetime) -> ApiError:
    """The refusal as an HTTP error, marked as audited (the core audits its refusals)."""
    status, name = RENDERINGS[refusal.kind]
    headers = {}
    if (wait := _wait(refusal, now)) is not None:
        headers["Retry-After"] = retry_after(wait)
    return ApiError(status, name, refusal.plain(), headers, audited=True)


def _wait(refusal: Refusal, now: datetime) -> float | None:
    """Seconds until asking again may succeed: the refusal's own, or until its `until` (a
    quota's reset, the end of a pause, one a blocked prompt may have started)."""
    if refusal.retry_after is not None:
        return refusal.retry_after
    if refusal.until is not None:
        return (refusal.until - now).total_seconds()
    return None
