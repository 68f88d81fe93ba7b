"""Job failures the engine reports to the bot, each with its protocol error code."""

from __future__ import annotations

from engine.protocol import ErrorCode, ImageVerdict


class JobFailure(Exception):
    """A job ended without images for a reason the requester should hear about."""

    code = ErrorCode.INTERNAL


class BadRequest(JobFailure, ValueError):
    code = ErrorCode.BAD_REQUEST


class UnknownModel(JobFailure, LookupError):
    code = ErrorCode.UNKNOWN_MODEL


class Cancelled(JobFailure):
    """Raised from the step callback: the pipeline stops before the VAE decode.

    `used`: the device seconds each cancelled job's images used before it stopped, by
    job id (charged to it: its member saw the previews); filled in as the batch ends."""

    code = ErrorCode.CANCELLED

    def __init__(self, message: str, used: dict[str, float] | None = None) -> None:
        super().__init__(message)
        self.used = used or {}


class OutOfMemory(JobFailure):
    """Even one image at a time did not fit in the device's memory."""

    code = ErrorCode.OUT_OF_MEMORY


class InputFlagged(JobFailure):
    """An input image of a job whose flagged images are withheld was flagged by the
    classifier: the job stops before any GPU work."""

    code = ErrorCode.CONTENT_FILTERED

    def __init__(self, message: str, verdicts: dict[str, ImageVerdict]) -> None:
        super().__init__(message)
        self.verdicts = verdicts
