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
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

PROTOCOL_VERSION = 2

# Limits shared by both sides: the bot refuses out-of-range input before it
# queues anything, and the engine re-checks so the CLI gets the same rules.
MAX_IMAGES_PER_JOB = 4
MIN_SIDE = 64
MAX_SIDE = 2048
MAX_STEPS = 150
MAX_SEED = 2**32 - 1
MIN_STRENGTH = 0.05
MAX_CONTROL_SCALE = 2.0

# Sampler names as users know them from other Stable Diffusion tools; the
# engine maps each to a diffusers scheduler (engine.samplers).
SAMPLER_NAMES: tuple[str, ...] = (
    "Euler", "Euler a", "Heun", "DPM2", "DPM2 a", "DPM++ 2M", "DPM++ 2M Karras",
    "DPM++ 2M SDE", "DPM++ 2M SDE Karras", "DPM++ SDE", "DPM++ SDE Karras", "DDIM", "PNDM",
    "UniPC", "LMS", "LMS Karras", "LCM",
)  # fmt: skip


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ControlType(StrEnum):
    """How a ControlNet image is read: which ControlNet, and how it is prepared.

    canny: edges are extracted from a photo. scribble / lineart: the drawing is
    used as drawn (inverted when it is dark lines on white). none: the image is
    already a control map (depth, pose, ...) for the ControlNet configured as `none`.
    """

    CANNY = "canny"
    SCRIBBLE = "scribble"
    LINEART = "lineart"
    NONE = "none"


class ModelSpec(Message):
    """One `[models.<name>]` entry: where the weights are and their defaults.

    The family (SD 1.x/2.x or SDXL) is read from the checkpoint, not configured.
    """

    source: str = Field(
        description="Hugging Face repo id, local diffusers folder or single-file .safetensors"
    )
    width: int = Field(512, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8)
    height: int = Field(512, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8)
    steps: int = Field(30, ge=1, le=MAX_STEPS)
    cfg: float = Field(7.0, ge=0.0, le=30.0)
    sampler: str = "DPM++ 2M Karras"
    controlnets: dict[ControlType, str] = Field(
        default_factory=dict, description="ControlNet source (repo id, folder or file) per type"
    )
    inpaint: str | None = Field(None, description="dedicated inpainting checkpoint source")
    vae: str | None = Field(None, description="VAE source replacing the checkpoint's own")
    preview_decoder: str | None = Field(
        None, description="tiny autoencoder (TAESD-style) source for live previews"
    )


class Mode(StrEnum):
    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"  # from `init_image`, changed by `strength`
    INPAINT = "inpaint"  # repaint where `mask_image` is white
    CONTROLNET = "controlnet"  # text-to-image guided by `control_image`
    VARIATION = "variation"  # img2img from an earlier output, new seed
    UPSCALE = "upscale"  # `init_image` resized to width x height, then refined


# Which input images each mode needs; any other image field must be empty.
MODE_INPUTS: dict[Mode, frozenset[str]] = {
    Mode.TXT2IMG: frozenset(),
    Mode.IMG2IMG: frozenset({"init_image"}),
    Mode.INPAINT: frozenset({"init_image", "mask_image"}),
    Mode.CONTROLNET: frozenset({"control_image"}),
    Mode.VARIATION: frozenset({"init_image"}),
    Mode.UPSCALE: frozenset({"init_image"}),
}


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
    # Input images are files the bot has checked and saved; paths are absolute.
    init_image: str | None = None
    mask_image: str | None = Field(None, description="white = repaint, black = keep")
    control_image: str | None = None
    control_type: ControlType = ControlType.CANNY
    control_scale: float = Field(1.0, ge=0.0, le=MAX_CONTROL_SCALE)
    strength: float = Field(
        0.75, ge=MIN_STRENGTH, le=1.0, description="how much of init_image is repainted"
    )
    preview_every: int = Field(0, ge=0, description="a preview every k steps; 0: none")

    @model_validator(mode="after")
    def _inputs_match_mode(self) -> Self:
        needed = MODE_INPUTS[self.mode]
        for name in ("init_image", "mask_image", "control_image"):
            given = getattr(self, name) is not None
            if given != (name in needed):
                verb = "needs" if name in needed else "takes no"
                raise ValueError(f"mode {self.mode} {verb} {name}")
        return self


class CancelRequest(Message):
    type: Literal["cancel"] = "cancel"
    job_id: str


class SetupRequest(Message):
    """First line the engine reads: which device to use and which models exist."""

    type: Literal["setup"] = "setup"
    version: int = PROTOCOL_VERSION
    device: str
    models: dict[str, ModelSpec]
    model_memory_gb: float | None = Field(
        None, gt=0, description="budget for resident checkpoints (LRU); None: engine decides"
    )


class ShutdownRequest(Message):
    type: Literal["shutdown"] = "shutdown"


class StatusRequest(Message):
    """Answered with a `Status` event at once, even while a job runs."""

    type: Literal["status"] = "status"


Request = Annotated[
    SetupRequest | GenerateRequest | CancelRequest | ShutdownRequest | StatusRequest,
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
    preview: str | None = Field(
        None, description="path of a small PNG of the image so far (replaced atomically)"
    )


class OutputImage(Message):
    path: str
    seed: int
    width: int
    height: int
    sha256: str
    recipe: dict[str, Any] = Field(
        description="everything needed to make this image again (also in its PNG text chunk)"
    )


class JobResult(Message):
    type: Literal["result"] = "result"
    job_id: str
    images: list[OutputImage]
    gpu_seconds: float = Field(ge=0.0, description="wall time the engine spent on this job")
    sampler: str


class LoadedModel(Message):
    name: str
    family: str = Field(description='"sd" (1.x/2.x) or "sdxl"')
    memory_bytes: int


class Status(Message):
    type: Literal["status"] = "status"
    device: str
    loaded: list[LoadedModel] = Field(description="resident models, most recently used last")
    running_job: str | None
    memory_used_bytes: int | None = Field(description="device memory in use; None on CPU")
    memory_total_bytes: int | None
    # NVML's view of the whole GPU (all processes on it); None without pynvml or a GPU.
    gpu_memory_used_bytes: int | None = None
    gpu_memory_free_bytes: int | None = None
    gpu_utilization: float | None = Field(None, description="percent of time a kernel ran")


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


Event = Annotated[Ready | Progress | JobResult | JobError | Status, Field(discriminator="type")]

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
