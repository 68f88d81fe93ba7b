"""The HTTP API's bodies as pydantic models: they validate requests, shape responses and
are the source of the OpenAPI document (bot.http.openapi).

Field names, enums and response shapes are Stability's REST API v1, so client code
written for it runs unchanged; ranges are the engine's where they are narrower.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from engine.protocol import (
    MAX_IMAGES_PER_JOB,
    MAX_LORA_WEIGHT,
    MAX_LORAS,
    MAX_REFERENCES,
    MAX_SEED,
    MAX_SIDE,
    MAX_STEPS,
    MIN_SIDE,
    ReferenceMode,
)

from ..core.views import JobState
from ..jobs.prompt_language import MAX_CFG, MAX_STYLE_WEIGHT
from ..jobs.spec import MAX_TYPED_CHARS

# Stability's limit on one prompt's text; the joined prompt has the job's own limit.
MAX_PROMPT_TEXT = 2000
MAX_PROMPTS = 10


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sampler(StrEnum):
    """Stability's sampler names; each runs as the engine sampler bot.http.translate maps it to."""

    DDIM = "DDIM"
    DDPM = "DDPM"
    K_DPMPP_2M = "K_DPMPP_2M"
    K_DPMPP_2S_ANCESTRAL = "K_DPMPP_2S_ANCESTRAL"
    K_DPM_2 = "K_DPM_2"
    K_DPM_2_ANCESTRAL = "K_DPM_2_ANCESTRAL"
    K_EULER = "K_EULER"
    K_EULER_ANCESTRAL = "K_EULER_ANCESTRAL"
    K_HEUN = "K_HEUN"
    K_LMS = "K_LMS"


class ClipGuidancePreset(StrEnum):
    """Accepted for compatibility and ignored: the engine has no CLIP guidance."""

    FAST_BLUE = "FAST_BLUE"
    FAST_GREEN = "FAST_GREEN"
    NONE = "NONE"
    SIMPLE = "SIMPLE"
    SLOW = "SLOW"
    SLOWER = "SLOWER"
    SLOWEST = "SLOWEST"


class InitImageMode(StrEnum):
    IMAGE_STRENGTH = "IMAGE_STRENGTH"
    STEP_SCHEDULE = "STEP_SCHEDULE"


class MaskSource(StrEnum):
    MASK_IMAGE_WHITE = "MASK_IMAGE_WHITE"  # white pixels of mask_image are repainted
    MASK_IMAGE_BLACK = "MASK_IMAGE_BLACK"  # black pixels of mask_image are repainted
    INIT_IMAGE_ALPHA = "INIT_IMAGE_ALPHA"  # transparent pixels of init_image are repainted


class FinishReason(StrEnum):
    SUCCESS = "SUCCESS"
    ERROR = "ERROR"
    CONTENT_FILTERED = "CONTENT_FILTERED"


class TextPrompt(Body):
    text: str = Field(max_length=MAX_PROMPT_TEXT, description="The prompt itself")
    weight: float = Field(
        1.0,
        allow_inf_nan=False,
        description="A negative weight makes it a negative prompt; positive prompts are"
        " blended by weight (their embeddings averaged in proportion to the weights)",
    )


class LoraRequest(Body):
    """One LoRA of a request, as `<lora:name:weight>` in a prompt."""

    name: str = Field(min_length=1, max_length=64, description="A configured LoRA's name")
    weight: float | None = Field(
        None,
        ge=-MAX_LORA_WEIGHT,
        le=MAX_LORA_WEIGHT,
        description="How strongly it applies; default: its configured weight",
    )


class GenerationOptions(Body):
    """Fields every generation request takes; unset ones come from the member's own
    defaults (/defaults), then the model's."""

    cfg_scale: float | None = Field(
        None, ge=0.0, le=MAX_CFG, description="How strictly to follow the prompt"
    )
    clip_guidance_preset: ClipGuidancePreset | None = Field(
        None, description="Accepted and ignored: Atelier's engine has no CLIP guidance"
    )
    sampler: Sampler | None = None
    samples: int = Field(1, ge=1, le=MAX_IMAGES_PER_JOB, description="Number of images")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="0: a random seed; image i uses seed + i")
    steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="Denoising steps")
    style_preset: str | None = Field(
        None,
        max_length=64,
        description="A Stability style preset name: applied when a [styles.<name>] of that"
        " name is configured, otherwise ignored; configured style names work too",
    )
    loras: list[LoraRequest] = Field(
        default_factory=list,
        max_length=MAX_LORAS,
        description="LoRAs to apply (configured ones of the model's family), beside any"
        " <lora:name:weight> in the prompt; one in both takes the weight given here",
    )
    draft: bool = Field(
        False,
        description="A draft (--draft): the model's few-step LoRA, fast and cheaper, marked"
        " as a draft; its `enhance` action makes it again at full quality",
    )
    extras: dict[str, Any] | None = Field(None, description="Accepted and ignored")


class TextToImageRequest(GenerationOptions):
    text_prompts: list[TextPrompt] = Field(min_length=1, max_length=MAX_PROMPTS)
    height: int | None = Field(
        None,
        ge=MIN_SIDE,
        le=MAX_SIDE,
        multiple_of=64,
        description="Pixels, a multiple of 64; default: the model's. At most 4x the model's"
        " native pixel count (width x height).",
    )
    width: int | None = Field(
        None,
        ge=MIN_SIDE,
        le=MAX_SIDE,
        multiple_of=64,
        description="Pixels, a multiple of 64; default: the model's",
    )


class ImageToImageRequest(GenerationOptions):
    """multipart/form-data: prompts as `text_prompts[i][text]` and `text_prompts[i][weight]`."""

    text_prompts: list[TextPrompt] = Field(min_length=1, max_length=MAX_PROMPTS)
    init_image: bytes = Field(description="PNG, JPEG, WebP or GIF to start from")
    init_image_mode: InitImageMode = InitImageMode.IMAGE_STRENGTH
    image_strength: float = Field(
        0.35,
        ge=0.0,
        le=1.0,
        description="How much of init_image to keep (1 - the engine's strength; at most"
        " 0.95, as the engine repaints at least 5%)",
    )
    step_schedule_start: float = Field(
        0.65, ge=0.0, le=1.0, description="With STEP_SCHEDULE: how much to repaint"
    )
    step_schedule_end: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="With STEP_SCHEDULE: the share of the last steps to skip (recorded as the"
        " job's --stop; the engine runs every step today)",
    )


class MaskingRequest(GenerationOptions):
    """multipart/form-data: prompts as `text_prompts[i][text]` and `text_prompts[i][weight]`."""

    text_prompts: list[TextPrompt] = Field(min_length=1, max_length=MAX_PROMPTS)
    init_image: bytes = Field(description="PNG, JPEG, WebP or GIF to repaint in part")
    mask_source: MaskSource
    mask_image: bytes | None = Field(
        None, description="Needed with MASK_IMAGE_WHITE and MASK_IMAGE_BLACK"
    )


class JobRequest(TextToImageRequest):
    """POST /v1/jobs as JSON: a text-to-image body, plus the engine (default: the member's
    default model, else the configured one), and reference images: a style reference
    (`--sref`) or a blend (`/blend`)."""

    engine_id: str | None = Field(None, max_length=100)
    style_references: list[str] = Field(
        default_factory=list,
        max_length=MAX_REFERENCES,
        description="Results to take after, as --sref: a job id (`<id>`, `<id>/<image>`) of"
        " yours or of a public result, or a result's link",
    )
    reference_images: list[str] = Field(
        default_factory=list,
        max_length=MAX_REFERENCES,
        description="Reference images, base64 PNG, JPEG, WebP or GIF (a data URL works);"
        " after style_references, at most 5 in all",
    )
    mode: ReferenceMode = Field(
        ReferenceMode.STYLE,
        description="How the reference images steer the job: `style` (their style only, as"
        " --sref) or `blend` (2 to 5 images blended whole, as /blend)",
    )
    style_weight: int | None = Field(
        None,
        ge=0,
        le=MAX_STYLE_WEIGHT,
        description="How strongly the references steer it, as --sw (default 100)",
    )


class ImageJobRequest(GenerationOptions):
    """POST /v1/jobs as multipart: an image-to-image body, or a masking one when
    `mask_source` is given, plus the engine."""

    engine_id: str | None = Field(None, max_length=100)
    text_prompts: list[TextPrompt] = Field(min_length=1, max_length=MAX_PROMPTS)
    init_image: bytes
    init_image_mode: InitImageMode = InitImageMode.IMAGE_STRENGTH
    image_strength: float = Field(0.35, ge=0.0, le=1.0)
    step_schedule_start: float = Field(0.65, ge=0.0, le=1.0)
    step_schedule_end: float | None = Field(None, ge=0.0, le=1.0)
    mask_source: MaskSource | None = None
    mask_image: bytes | None = None


# -- responses -------------------------------------------------------------------------


class Artifact(Body):
    base64: str = Field(description="The PNG, base64-encoded (empty for ERROR)")
    seed: int
    finishReason: FinishReason  # Stability's spelling


class GenerationResponse(Body):
    artifacts: list[Artifact]


class Engine(Body):
    id: str = Field(description="A configured model's name: the engine_id of the other paths")
    name: str
    description: str
    type: Literal["PICTURE"] = "PICTURE"


class EngineList(RootModel[list[Engine]]):
    pass


class Organization(Body):
    id: str
    name: str
    role: str
    is_default: bool


class Account(Body):
    id: str = Field(description="The member's Discord user id")
    name: str = Field(description="The member's Discord name")
    email: str = Field(description="Always empty: Discord does not share members' e-mail")
    organizations: list[Organization] = Field(description="The Discord server the key was made in")
    key_id: int = Field(description="The API key this request used")


class Balance(Body):
    credits: float = Field(
        description="What is left of today's quota in the configured currency; 1e9 when"
        " no limit applies to spending (see `unlimited`)"
    )
    currency: str
    unlimited: bool
    images_left: int | None = Field(description="null: no images-per-day limit")
    gpu_seconds_left: float | None = Field(description="null: no GPU-seconds-per-day limit")
    resets_at: datetime


class ErrorBody(Body):
    id: str = Field(description="This occurrence; the admin finds it in the bot's log")
    name: str = Field(description="The class of error, e.g. bad_request")
    message: str = Field(description="What went wrong, naming the field at fault")


class JobCreated(Body):
    id: str
    status: JobState
    position: int | None = Field(description="1: runs next; null once it runs or ended")
    eta_seconds: float | None = Field(description="About how long until it is done")


class ActionRequest(Body):
    """What an action on a job needs besides the job: an image for a per-image action, the
    words for one that takes words; `{}` (or no body) for the others."""

    image: int | None = Field(
        None,
        ge=1,
        le=MAX_IMAGES_PER_JOB,
        description="Which of the job's images, from 1 (variation, strong, upscale)",
    )
    prompt: str | None = Field(
        None,
        max_length=MAX_TYPED_CHARS,
        description="The new prompt (remix); Midjourney-style flags such as --seed work",
    )
    negative_prompt: str = Field(
        "", max_length=MAX_PROMPT_TEXT, description="The new negative prompt (remix)"
    )
    zoom: float | None = Field(
        None, description="How far to zoom out, from 1.05 to 2 (custom_zoom, with a prompt)"
    )
    mask: str | None = Field(
        None,
        description="The region to repaint (vary_region, with a prompt): a PNG of the image's"
        " size, white where it changes and black where it stays, base64 (a data URL works)",
    )


class EditorSubmission(Body):
    """What the Vary (Region) editor page sends: the words and the painted mask."""

    prompt: str = Field(max_length=MAX_TYPED_CHARS, description="The new prompt")
    negative_prompt: str = Field("", max_length=MAX_PROMPT_TEXT)
    mask: str = Field(description="The painted region as a PNG data URL (white = repaint)")


class JobProgress(Body):
    step: int
    total: int


class JobView(Body):
    id: str
    status: JobState
    engine_id: str
    position: int | None
    eta_seconds: float | None
    progress: JobProgress | None = Field(description="While it runs: step n of N")
    artifacts: list[Artifact] | None = Field(description="Once it ended")
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    cached_from: str | None = Field(
        None,
        description="Answered from the result cache: the earlier job whose stored images"
        " these are (no GPU time, nothing charged)",
    )
    draft: bool = Field(
        False,
        description="A draft (`draft`, --draft): its `enhance` action makes it at full quality",
    )
    loras: list[LoraRequest] = Field(
        default_factory=list, description="The LoRAs it applies, at their weights"
    )


class EngineHealth(Body):
    device: str
    alive: bool = Field(description="The engine process answers (engines start with a job)")
    running_job: str | None
    loaded: list[str]


class Health(Body):
    status: Literal["ok", "error"]
    database: str = Field(description='"writable", or what failed')
    engines: list[EngineHealth]
