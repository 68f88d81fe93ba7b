"""Job failures the engine reports to the bot, each with its protocol error code."""

from __future__ import annotations

from engine.protocol import ErrorCode


class JobFailure(Exception):
    """A job ended without images for a reason the requester should hear about."""

    code = ErrorCode.INTERNAL


class BadRequest(JobFailure, ValueError):
    code = ErrorCode.BAD_REQUEST


class UnknownModel(JobFailure, LookupError):
    code = ErrorCode.UNKNOWN_MODEL


class Cancelled(JobFailure):
    """Raised from the step callback: the pipeline stops before the VAE decode."""

    code = ErrorCode.CANCELLED


class OutOfMemory(JobFailure):
    """Even one image at a time did not fit in the device's memory."""

    code = ErrorCode.OUT_OF_MEMORY
