"""The contract between the bot process and an engine process.

Requests go to the engine's stdin and events come back on a dedicated file
descriptor, one JSON object per line, each validated by pydantic on both
sides. Images never travel on the wire: the engine writes PNG files into the
job's output directory and names them in its result. The first exchange is a
handshake (`SetupRequest` -> `Ready`) that checks `PROTOCOL_VERSION`.

This module imports pydantic only, so the bot can use it without torch.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

PROTOCOL_VERSION = 1

# Limits shared by both sides: the bot refuses out-of-range input before it
# queues anything, and the engine re-checks so the CLI gets the same rules.
MAX_IMAGES_PER_JOB = 4
MIN_SIDE = 64
MAX_SIDE = 2048
MAX_STEPS = 150
MAX_SEED = 2**32 - 1


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(Message):
    """One `[models.<name>]` entry: where the weights are and their defaults."""

    source: str = Field(
        description="Hugging Face repo id, local diffusers folder or single-file .safetensors"
    )
    width: int = Field(512, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8)
    height: int = Field(512, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8)
    steps: int = Field(30, ge=1, le=MAX_STEPS)
    cfg: float = Field(7.0, ge=0.0, le=30.0)
    sampler: str = "DPM++ 2M Karras"


class Mode(StrEnum):
    TXT2IMG = "txt2img"


class GenerateRequest(Message):
    type: Literal["generate"] = "generate"
    job_id: str
    model: str
    mode: Mode = Mode.TXT2IMG
    prompt: str
    negative_prompt: str = ""
    width: int = Field(ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8)
    height: int = Field(ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8)
    steps: int = Field(ge=1, le=MAX_STEPS)
    cfg: float = Field(ge=0.0, le=30.0)
    sampler: str
    seed: int = Field(ge=0, le=MAX_SEED, description="image i of the batch uses seed + i")
    count: int = Field(1, ge=1, le=MAX_IMAGES_PER_JOB)
    output_dir: str = Field(description="folder the engine writes <job_id>-<i>.png into")


class CancelRequest(Message):
    type: Literal["cancel"] = "cancel"
    job_id: str


class SetupRequest(Message):
    """First line the engine reads: which device to use and which models exist."""

    type: Literal["setup"] = "setup"
    version: int = PROTOCOL_VERSION
    device: str
    models: dict[str, ModelSpec]


class ShutdownRequest(Message):
    type: Literal["shutdown"] = "shutdown"


Request = Annotated[
    SetupRequest | GenerateRequest | CancelRequest | ShutdownRequest,
    Field(discriminator="type"),
]


class Ready(Message):
    type: Literal["ready"] = "ready"
    version: int = PROTOCOL_VERSION
    device: str
    models: list[str]


class Progress(Message):
    type: Literal["progress"] = "progress"
    job_id: str
    step: int = Field(ge=0)
    total: int = Field(ge=1)


class OutputImage(Message):
    path: str
    seed: int
    width: int
    height: int
    sha256: str


class JobResult(Message):
    type: Literal["result"] = "result"
    job_id: str
    images: list[OutputImage]
    gpu_seconds: float = Field(ge=0.0, description="wall time the engine spent on this job")
    sampler: str


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad_request"
    UNKNOWN_MODEL = "unknown_model"
    OUT_OF_MEMORY = "out_of_memory"
    CANCELLED = "cancelled"
    INTERNAL = "internal"


class JobError(Message):
    """A job failed; `job_id` is None for an error outside any job (a bad line)."""

    type: Literal["error"] = "error"
    job_id: str | None
    code: ErrorCode
    message: str


Event = Annotated[Ready | Progress | JobResult | JobError, Field(discriminator="type")]

_requests: TypeAdapter[Request] = TypeAdapter(Request)
_events: TypeAdapter[Event] = TypeAdapter(Event)


def encode(message: Message) -> bytes:
    """One protocol line, newline included."""
    return message.model_dump_json().encode() + b"\n"


def decode_request(line: bytes | str) -> Request:
    """Parse a request line; raises pydantic.ValidationError on anything else."""
    return _requests.validate_json(line)


def decode_event(line: bytes | str) -> Event:
    """Parse an event line; raises pydantic.ValidationError on anything else."""
    return _events.validate_json(line)
