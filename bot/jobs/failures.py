"""What a member reads when a job ends without images: one friendly sentence by kind.

A job's stored error keeps the detail (engine messages, exception names,
paths) for admins and the log; a member only ever sees the sentence of its
kind and the job id, which the admins can look up.
"""

from __future__ import annotations

import re
from enum import StrEnum

from ..store.models import JobState


class FailureKind(StrEnum):
    CANCELLED = "cancelled"
    BLOCKED = "blocked"
    OUT_OF_MEMORY = "out_of_memory"
    TIMEOUT = "timeout"
    ENGINE_STOPPED = "engine_stopped"  # the engine crashed or went away mid-job
    BOT_STOPPED = "bot_stopped"  # the bot stopped while the job ran
    NOT_RETRIED = "not_retried"  # the job took the engine (or the bot) down twice
    INPUT_GONE = "input_gone"  # an input image could not be read (deleted meanwhile)
    UNKNOWN_MODEL = "unknown_model"
    INTERNAL = "internal"


# Checked in order against the stored error (lower case); the first match decides.
_PATTERNS: tuple[tuple[re.Pattern[str], FailureKind], ...] = tuple(
    (re.compile(pattern), kind)
    for pattern, kind in (
        (r"times; not retried", FailureKind.NOT_RETRIED),
        (r"out of memory", FailureKind.OUT_OF_MEMORY),
        (r"took longer than", FailureKind.TIMEOUT),
        (r"\bcancel", FailureKind.CANCELLED),
        (r"could not be read|no such file", FailureKind.INPUT_GONE),
        (r"unknown model", FailureKind.UNKNOWN_MODEL),
        (r"the bot stopped", FailureKind.BOT_STOPPED),
        (
            r"engine .*(exited|went away|not running|did not start)|protocol line",
            FailureKind.ENGINE_STOPPED,
        ),
    )
)

_SENTENCES = {
    FailureKind.CANCELLED: "it was cancelled.",
    FailureKind.OUT_OF_MEMORY: (
        "it did not fit in the GPU's memory; try a smaller size or fewer images."
    ),
    FailureKind.TIMEOUT: "it took too long and was stopped; try fewer steps or a smaller size.",
    FailureKind.ENGINE_STOPPED: "the image engine stopped while making it; please try again.",
    FailureKind.BOT_STOPPED: "the bot restarted while making it; please try again.",
    FailureKind.NOT_RETRIED: (
        "it stopped the image engine twice, so it was not retried; try other settings."
    ),
    FailureKind.INPUT_GONE: (
        "an image it starts from is no longer stored; attach it again or pick another."
    ),
    FailureKind.UNKNOWN_MODEL: "its model is no longer available; please pick another model.",
    FailureKind.INTERNAL: "something went wrong on our side; please try again.",
}


def failure_kind(state: JobState, error: str | None) -> FailureKind:
    """The kind of an unsuccessful job's end, from its state and stored error."""
    if state is JobState.CANCELLED:
        return FailureKind.CANCELLED
    if state is JobState.BLOCKED:
        return FailureKind.BLOCKED
    text = (error or "").casefold()
    for pattern, kind in _PATTERNS:
        if pattern.search(text):
            return kind
    return FailureKind.INTERNAL


def failure_reason(error: str | None) -> str:
    """Why a failed job made no images, as one sentence for the member (the HTTP API)."""
    return _SENTENCES[failure_kind(JobState.FAILED, error)]


def member_failure(job_id: str, state: JobState, error: str | None) -> str:
    """The one sentence a member reads about a job that made no images.

    Never the stored error itself: it can hold exception text and paths.
    """
    kind = failure_kind(state, error)
    if kind is FailureKind.CANCELLED:
        return f"🛑 Job `{job_id}` was cancelled."
    if kind is FailureKind.BLOCKED:
        return f"🚫 Job `{job_id}`: its images were withheld by this server's image filter."
    return f"❌ Job `{job_id}` failed: {_SENTENCES[kind]}"
