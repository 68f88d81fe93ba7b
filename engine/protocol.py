"""The contract between the bot process and an engine process.

Requests go to the engine's stdin and events come back on a dedicated file
descriptor, one JSON object per line, each validated by pydantic on both
sides. Images never travel on the wire: the engine writes PNG files into the
job's output directory and names them in its result. The first exchange is a
handshake (`SetupRequest` -> `Ready`) that checks `PROTOCOL_VERSION`.

A `GenerateRequest` is a batch: settings shared by one pipeline call
(`SharedParams`) and one or more jobs (`BatchJob`), each with its own prompt,
seeds, input images and output folder. Events stay per job. `batch_key` says
which jobs may share a request, without importing torch.

This module imports pydantic only, so the bot can use it without torch.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

PROTOCOL_VERSION = 10

# Limits shared by both sides: the bot refuses out-of-range input before it
# queues anything, and the engine re-checks so the CLI gets the same rules.
MAX_IMAGES_PER_JOB = 4
# The most images one request (a batch of jobs) may make; the bot's
# `[engine] max_batch_images` is at most this.
MAX_IMAGES_PER_BATCH = 64
MIN_SIDE = 64
MAX_SIDE = 2048
MAX_STEPS = 150
MAX_SEED = 2**32 - 1
MIN_STRENGTH = 0.05
# --stop: the fewest percent of the denoising steps a job may run before decoding.
MIN_STOP = 10
MAX_CONTROL_SCALE = 2.0

# Sampler names as users know them from other Stable Diffusion tools; the
# engine maps each to a diffusers scheduler (engine.samplers).
SAMPLER_NAMES: tuple[str, ...] = (
    "Euler",
    "Euler a",
    "Heun",
    "DPM2",
    "DPM2 a",
    "DPM++ 2M",
    "DPM++ 2M Karras",
    "DPM++ 2M SDE",
    "DPM++ 2M SDE Karras",
    "DPM++ SDE",
    "DPM++ SDE Karras",
    "DDIM",
    "PNDM",
    "UniPC",
    "LMS",
    "LMS Karras",
    "LCM",
    "TCD",
)


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- the image classifier (engine.safety) -----------------------------------------------

# What NudeNet's 320n detector (the classifier the engine runs) can find, in its order.
NUDENET_LABELS: tuple[str, ...] = (
    "FEMALE_GENITALIA_COVERED",
    "FACE_FEMALE",
    "BUTTOCKS_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_BREAST_EXPOSED",
    "ANUS_EXPOSED",
    "FEET_EXPOSED",
    "BELLY_COVERED",
    "FEET_COVERED",
    "ARMPITS_COVERED",
    "ARMPITS_EXPOSED",
    "FACE_MALE",
    "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "ANUS_COVERED",
    "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)
# The labels that make an image explicit unless configured otherwise.
EXPLICIT_LABELS: tuple[str, ...] = (
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "BUTTOCKS_EXPOSED",
    "ANUS_EXPOSED",
)
DEFAULT_IMAGE_THRESHOLD = 0.5


class NsfwPolicy(StrEnum):
    """What happens to a job's flagged images, decided by the bot from where the job
    shows its images: `block` withholds them (and a flagged input stops the job before
    any GPU work), `spoiler` shows them behind a spoiler, `allow` shows them."""

    ALLOW = "allow"
    SPOILER = "spoiler"
    BLOCK = "block"


class ClassifierSettings(Message):
    """The engine's image classifier: which of its labels count, and from what score."""

    enabled: bool = Field(True, description="classify every input, preview and output image")
    threshold: float = Field(
        DEFAULT_IMAGE_THRESHOLD,
        ge=0.0,
        le=1.0,
        description="an image is flagged when a counted label scores this or more (0: all)",
    )
    labels: list[str] = Field(
        default_factory=lambda: list(EXPLICIT_LABELS), min_length=1, description="labels counted"
    )

    @model_validator(mode="after")
    def _labels_are_known(self) -> Self:
        unknown = [label for label in self.labels if label not in NUDENET_LABELS]
        if unknown:
            raise ValueError(
                f"unknown classifier label(s) {', '.join(unknown)};"
                f" known: {', '.join(NUDENET_LABELS)}"
            )
        return self


class ImageVerdict(Message):
    """The classifier on one image: flagged or not, and the score of each counted label."""

    flagged: bool
    scores: dict[str, float] = Field(description="each counted label's score, 0-1")

    @property
    def top(self) -> tuple[str, float]:
        """The highest-scoring label and its score."""
        return max(self.scores.items(), key=lambda item: item[1], default=("", 0.0))


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


class Family(StrEnum):
    """A checkpoint's family: what its LoRAs and draft LoRA must be made for."""

    SD = "sd"  # Stable Diffusion 1.x and 2.x: one text encoder, same latent space
    SDXL = "sdxl"


# LoRAs: the most one job may use, and the widest weight (negative weights steer away,
# as with slider LoRAs).
MAX_LORAS = 5
MAX_LORA_WEIGHT = 2.0
# Draft mode: the few steps a draft LoRA (LCM, TCD, Hyper-SD) is made for.
MIN_DRAFT_STEPS, MAX_DRAFT_STEPS = 4, 8


# Style reference and blend (IP-Adapter): the most images one job may take after, and
# the strongest weight (1.0 is the adapter's trained strength).
MAX_REFERENCES = 5
MAX_REFERENCE_SCALE = 2.0


class ReferenceMode(StrEnum):
    """How a job's reference images steer it (engine.references)."""

    STYLE = "style"  # --sref: their style only (InstantStyle: only a style block hears them)
    BLEND = "blend"  # /blend: the images whole, content and style, in every block


class LoraSpec(Message):
    """One `[loras.<name>]` entry: a LoRA members add to a prompt with `<lora:name:0.8>`."""

    source: str = Field(
        description="a .safetensors file, a folder holding pytorch_lora_weights.safetensors,"
        " or a Hugging Face repo id"
    )
    family: Family = Field(description="the model family it was trained for")
    weight: float = Field(
        1.0, ge=-MAX_LORA_WEIGHT, le=MAX_LORA_WEIGHT, description="weight when none is given"
    )
    triggers: list[str] = Field(
        default_factory=list, description="words added to the prompt (if missing) when used"
    )


class LoraWeight(Message):
    """One LoRA of a job, by its configured name, at the weight it is applied with."""

    name: str = Field(min_length=1)
    weight: float = Field(ge=-MAX_LORA_WEIGHT, le=MAX_LORA_WEIGHT)


class ModelSpec(Message):
    """One `[models.<name>]` entry: where the weights are and their defaults.

    The engine reads the family (SD 1.x/2.x or SDXL) from the checkpoint; the bot,
    which loads none, reads `family` where the config gives it or the checkpoint's
    files show it (to refuse a LoRA made for the other family before queueing).
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
    family: Family | None = Field(
        None, description="sd or sdxl; None: read from the checkpoint's files where local"
    )
    draft_lora: str | None = Field(
        None, description="--draft: a few-step LoRA for this family (LCM-LoRA, TCD, Hyper-SD)"
    )
    draft_scheduler: str = Field("LCM", description="--draft: the sampler the LoRA is made for")
    draft_steps: int = Field(4, ge=MIN_DRAFT_STEPS, le=MAX_DRAFT_STEPS)
    ip_adapter: str | None = Field(
        None,
        description="--sref and /blend: IP-Adapter weights for this family, a .safetensors or"
        " .bin file or <repo id>/<path in the repo>",
    )
    image_encoder: str | None = Field(
        None,
        description="the CLIP image encoder the IP-Adapter was trained with, a folder or"
        " <repo id>[/<subfolder>]",
    )
    draft_cfg: float = Field(
        1.5, ge=0.0, le=30.0, description="--draft: guidance (few-step LoRAs want 1-2)"
    )

    @model_validator(mode="after")
    def _draft_scheduler_is_a_sampler(self) -> Self:
        if self.draft_scheduler not in SAMPLER_NAMES:
            raise ValueError(
                f"draft_scheduler {self.draft_scheduler!r} is not a sampler;"
                f" choose one of: {', '.join(SAMPLER_NAMES)} (LCM for an LCM-LoRA, TCD for"
                " a TCD or Hyper-SD LoRA)"
            )
        return self


class Mode(StrEnum):
    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"  # from `init_image`, changed by `strength`
    INPAINT = "inpaint"  # repaint where `mask_image` is white
    CONTROLNET = "controlnet"  # text-to-image guided by `control_image`
    VARIATION = "variation"  # img2img from an earlier output, new seed
    UPSCALE = "upscale"  # `init_image` resized to width x height, then refined
    # `init_image` placed at the job's `frame` on a larger canvas, the rest painted around it
    OUTPAINT = "outpaint"


# Which input images each mode needs; any other image field must be empty.
MODE_INPUTS: dict[Mode, frozenset[str]] = {
    Mode.TXT2IMG: frozenset(),
    Mode.IMG2IMG: frozenset({"init_image"}),
    Mode.INPAINT: frozenset({"init_image", "mask_image"}),
    Mode.CONTROLNET: frozenset({"control_image"}),
    Mode.VARIATION: frozenset({"init_image"}),
    Mode.UPSCALE: frozenset({"init_image"}),
    Mode.OUTPAINT: frozenset({"init_image"}),
}


class SharedParams(Message):
    """The settings of one pipeline call, which every job of a batch shares.

    Jobs may be merged into one `GenerateRequest` exactly when their
    `batch_key`s are equal; prompts, seeds, counts and input images may differ.
    """

    model: str
    mode: Mode = Mode.TXT2IMG
    width: int = Field(ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8)
    height: int = Field(ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8)
    steps: int = Field(ge=1, le=MAX_STEPS)
    cfg: float = Field(ge=0.0, le=30.0)
    sampler: str
    control_type: ControlType = ControlType.CANNY
    # Strength and control scale look like per-job choices, but a pipeline call
    # takes one of each: strength sets where the denoising starts (and so the
    # step count) for every image, and one ControlNet scale weighs every image.
    control_scale: float = Field(1.0, ge=0.0, le=MAX_CONTROL_SCALE)
    strength: float = Field(
        0.75, ge=MIN_STRENGTH, le=1.0, description="how much of init_image is repainted"
    )
    stop: int = Field(
        100, ge=MIN_STOP, le=100, description="percent of the denoising steps run before decoding"
    )
    # A convolution's padding is the model's, shared by every job of the call: tiled and
    # untiled jobs never share a batch.
    tile: bool = Field(
        False,
        description="a seamless texture: the image wraps around, left to right, top to bottom",
    )
    # LoRAs are loaded into the model's shared UNet (and text encoders) for one pipeline
    # call: only jobs with the same set, in the same (name) order and weights, share a batch.
    loras: tuple[LoraWeight, ...] = Field(
        (), max_length=MAX_LORAS, description="configured LoRAs by name, sorted by name"
    )
    # One IP-Adapter image input per pipeline call: only jobs after the same images (in
    # practice one job) share a batch.
    references: tuple[str, ...] = Field(
        (), max_length=MAX_REFERENCES, description="reference images' absolute paths"
    )
    reference_mode: ReferenceMode = ReferenceMode.STYLE
    reference_scale: float = Field(
        1.0,
        ge=0.0,
        le=MAX_REFERENCE_SCALE,
        description="the IP-Adapter's scale (from --sw: bot.jobs.spec.reference_scale)",
    )
    draft: bool = Field(
        False, description="with the model's draft LoRA (its draft_steps and draft_scheduler)"
    )

    @model_validator(mode="after")
    def _loras_named_once(self) -> Self:
        names = [lora.name for lora in self.loras]
        if names != sorted(set(names)):
            raise ValueError("loras are named once each, sorted by name")
        return self


# Settings a mode ignores, reset by `batch_key` so they never keep jobs apart.
_STRENGTH_MODES = frozenset(mode for mode, needed in MODE_INPUTS.items() if "init_image" in needed)
_SHARED_DEFAULTS = {
    name: SharedParams.model_fields[name].default
    for name in ("strength", "control_type", "control_scale", "reference_mode", "reference_scale")
}


def batch_key(params: SharedParams) -> SharedParams:
    """What two jobs must have equal to run in one batch (a hashable value).

    `params` may be a `GenerateRequest` or any `SharedParams`; settings its
    mode does not use (strength outside the image-to-image modes, control
    settings outside ControlNet) are reset to their defaults.
    """
    fields = {name: getattr(params, name) for name in SharedParams.model_fields}
    if params.mode not in _STRENGTH_MODES:
        fields["strength"] = _SHARED_DEFAULTS["strength"]
    if params.mode is not Mode.CONTROLNET:
        fields["control_type"] = _SHARED_DEFAULTS["control_type"]
        fields["control_scale"] = _SHARED_DEFAULTS["control_scale"]
    if not params.references:
        fields["reference_mode"] = _SHARED_DEFAULTS["reference_mode"]
        fields["reference_scale"] = _SHARED_DEFAULTS["reference_scale"]
    return SharedParams(**fields)


def fewest_steps(strength: float) -> int:
    """The fewest steps that leave an image-to-image job (any mode with an `init_image`)
    at least one denoising step: its pipeline runs int(steps * strength) of them, and
    none at all would return no image."""
    return next(n for n in range(1, 10 * MAX_STEPS) if int(n * strength) >= 1)


def consecutive_seeds(seed: int, count: int) -> list[int]:
    """Image i's seed when a job names none of its own: seed + i, wrapping so a recorded
    seed is always a valid request seed (the one rule for the bot and the engine)."""
    return [(seed + index) % (MAX_SEED + 1) for index in range(count)]


class WeightedPrompt(Message):
    """One prompt of a blend: its embedding counts in proportion to `weight`."""

    text: str
    weight: float = Field(gt=0.0)


class Frame(Message):
    """Where an outpainting job's `init_image` lies on its canvas (the request's width x
    height), in canvas pixels: the image is resized to `width` x `height` and its top-left
    corner put at (`left`, `top`); everything outside it is painted."""

    left: int = Field(ge=0, le=MAX_SIDE)
    top: int = Field(ge=0, le=MAX_SIDE)
    width: int = Field(ge=1, le=MAX_SIDE)
    height: int = Field(ge=1, le=MAX_SIDE)

    def problem_on(self, width: int, height: int) -> str | None:
        """Why this frame cannot be used on a `width` x `height` canvas, or None."""
        if self.left + self.width > width or self.top + self.height > height:
            return f"frame {self.describe()} reaches outside the {width}x{height} canvas"
        if (self.width, self.height) == (width, height):
            return f"frame {self.describe()} covers the whole canvas: nothing is left to paint"
        return None

    def describe(self) -> str:
        return f"{self.width}x{self.height} at ({self.left}, {self.top})"


class BatchJob(Message):
    """One job of a batch: what is its own (prompt, seeds, inputs, where its files go).

    Image i uses `seeds[i]` and `cfgs[i]` where they are given (--chaos spreads
    them), else `seed + i` and the batch's `cfg`. With `blend`, the engine encodes
    each prompt and uses their embeddings averaged by weight; `prompt` then only
    names the job (in its files' metadata).
    """

    job_id: str
    prompt: str
    negative_prompt: str = ""
    seed: int = Field(ge=0, le=MAX_SEED, description="image i of the job uses seed + i")
    count: int = Field(1, ge=1, le=MAX_IMAGES_PER_JOB)
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] | None = None
    cfgs: list[Annotated[float, Field(ge=0.0, le=30.0)]] | None = None
    blend: list[WeightedPrompt] = Field(default_factory=list)
    output_dir: str = Field(
        description="folder the engine writes <job_id>-<i>.png into, made if missing"
    )
    # Input images are files the bot has checked and saved; paths are absolute.
    init_image: str | None = None
    mask_image: str | None = Field(None, description="white = repaint, black = keep")
    control_image: str | None = None
    frame: Frame | None = Field(None, description="outpaint: where init_image lies on the canvas")
    nsfw_policy: NsfwPolicy = Field(
        NsfwPolicy.BLOCK, description="what the job's flagged images meet where they are shown"
    )

    @model_validator(mode="after")
    def _one_value_per_image(self) -> Self:
        for name in ("seeds", "cfgs"):
            values = getattr(self, name)
            if values is not None and len(values) != self.count:
                raise ValueError(f"{name} needs one value per image ({self.count})")
        return self


class GenerateRequest(SharedParams):
    """One batch: the shared settings and the jobs run together in one pipeline call.

    The engine answers `Progress` for every job still running at each step (the
    same step for all), then one `JobResult` or `JobError` per job.
    """

    type: Literal["generate"] = "generate"
    batch_id: str
    preview_every: int = Field(0, ge=0, description="a preview every k steps; 0: none")
    jobs: list[BatchJob] = Field(min_length=1)

    @property
    def job_ids(self) -> list[str]:
        return [job.job_id for job in self.jobs]

    @property
    def images(self) -> int:
        """Images the whole batch makes."""
        return sum(job.count for job in self.jobs)

    @classmethod
    def for_jobs(
        cls, batch_id: str, shared: SharedParams, jobs: list[BatchJob], preview_every: int = 0
    ) -> GenerateRequest:
        """A request running `jobs` with `shared` settings (e.g. a `batch_key`)."""
        fields = {name: getattr(shared, name) for name in SharedParams.model_fields}
        return cls(batch_id=batch_id, jobs=jobs, preview_every=preview_every, **fields)

    @model_validator(mode="after")
    def _jobs_fit_together(self) -> Self:
        if len(set(self.job_ids)) != len(self.jobs):
            raise ValueError("each job of a batch needs its own job_id")
        if self.images > MAX_IMAGES_PER_BATCH:
            raise ValueError(
                f"a batch makes at most {MAX_IMAGES_PER_BATCH} images, not {self.images}"
            )
        needed = MODE_INPUTS[self.mode]
        for job in self.jobs:
            for name in ("init_image", "mask_image", "control_image"):
                given = getattr(job, name) is not None
                if given != (name in needed):
                    verb = "needs" if name in needed else "takes no"
                    raise ValueError(f"job {job.job_id}: mode {self.mode} {verb} {name}")
            self._check_frame(job)
        return self

    def _check_frame(self, job: BatchJob) -> None:
        if (job.frame is not None) != (self.mode is Mode.OUTPAINT):
            verb = "needs" if self.mode is Mode.OUTPAINT else "takes no"
            raise ValueError(f"job {job.job_id}: mode {self.mode} {verb} frame")
        if job.frame is not None and (problem := job.frame.problem_on(self.width, self.height)):
            raise ValueError(f"job {job.job_id}: {problem}")


class CancelRequest(Message):
    type: Literal["cancel"] = "cancel"
    job_id: str


Precision = Literal["auto", "fp16", "bf16", "fp32"]
Attention = Literal["sdpa", "classic"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


class EngineSpeed(Message):
    """How the engine runs its models: precision and the speed-ups the diffusers
    optimisation guides recommend for serving (engine.speed applies them)."""

    dtype: Precision = Field(
        "auto", description="weights and activations; auto: fp16 on CUDA, fp32 elsewhere"
    )
    attention: Attention = Field(
        "sdpa", description="PyTorch's fused scaled-dot-product attention, or diffusers' classic"
    )
    channels_last: bool = Field(True, description="UNet and VAE weights in NHWC memory format")
    fuse_qkv: bool = Field(True, description="one matmul for each attention's q, k and v")
    sdxl_vae: str | None = Field(
        None, description="VAE source for SDXL models that name none (an fp16-safe one)"
    )
    compile: bool = Field(False, description="torch.compile the UNet and the VAE decoder")
    compile_mode: CompileMode = "max-autotune"
    # With `compile`, the engine loads this model and runs it once per batch size
    # below before it answers Ready, so no member's job pays for compiling.
    warmup_model: str | None = None
    warmup_batch_images: list[int] = Field(default_factory=lambda: [1])


class SetupRequest(Message):
    """First line the engine reads: which device to use and which models exist."""

    type: Literal["setup"] = "setup"
    version: int = PROTOCOL_VERSION
    device: str
    models: dict[str, ModelSpec]
    model_memory_gb: float | None = Field(
        None, gt=0, description="budget for resident checkpoints (LRU); None: engine decides"
    )
    speed: EngineSpeed = EngineSpeed()
    classifier: ClassifierSettings = ClassifierSettings()
    loras: dict[str, LoraSpec] = Field(default_factory=dict, description="LoRAs by name")


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
    verdict: ImageVerdict | None = Field(None, description="the classifier's; None when off")


class JobResult(Message):
    """One job's images, and the record of the batch it ran in.

    The batch's measured time is shared out in proportion to images: a job's
    `gpu_seconds` is `batch_gpu_seconds` x its images / the images the batch
    ran. The shares sum to `batch_gpu_seconds` unless a job of the batch was
    cancelled after its images started; that work is the cancelled job's,
    charged to it (JobError.gpu_seconds), not to the others.
    """

    type: Literal["result"] = "result"
    job_id: str
    images: list[OutputImage]
    gpu_seconds: float = Field(ge=0.0, description="this job's share of the batch's GPU time")
    sampler: str
    batch_id: str
    batch_jobs: list[str] = Field(description="every job of the batch, this one included")
    batch_gpu_seconds: float = Field(ge=0.0, description="wall time the engine spent on the batch")


class LoadedModel(Message):
    name: str
    family: str = Field(description='"sd" (1.x/2.x) or "sdxl"')
    memory_bytes: int


class Status(Message):
    type: Literal["status"] = "status"
    device: str
    loaded: list[LoadedModel] = Field(description="resident models, most recently used last")
    running_batch: str | None
    running_jobs: list[str] = Field(description="the jobs of the running batch")
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
    CONTENT_FILTERED = "content_filtered"  # an input image flagged by the classifier
    INTERNAL = "internal"


class JobError(Message):
    """A job failed; `job_id` is None for an error outside any job (a bad line)."""

    type: Literal["error"] = "error"
    job_id: str | None
    code: ErrorCode
    message: str
    gpu_seconds: float = Field(
        0.0, ge=0.0, description="cancelled: the device time its images used before it stopped"
    )
    # content_filtered: the classifier on each input image of the job, by field name.
    verdicts: dict[str, ImageVerdict] = Field(default_factory=dict)


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
