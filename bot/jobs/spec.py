"""JobSpec: one validated request for images, and the pure rules that build it.

Everything here is pure (no Discord, no SQL, no GPU) so the rules a member
meets at the door are tested on their own.
"""

from __future__ import annotations

import math
import re
import secrets
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field

from engine.protocol import (
    MAX_CONTROL_SCALE,
    MAX_IMAGES_PER_JOB,
    MAX_SEED,
    MAX_SIDE,
    MAX_STEPS,
    MIN_SIDE,
    MIN_STRENGTH,
    SAMPLER_NAMES,
    BatchJob,
    ControlType,
    GenerateRequest,
    Mode,
    ModelSpec,
    SharedParams,
)

MAX_PROMPT_CHARS = 1500
ASPECTS = ("1:1", "3:2", "2:3", "16:9", "9:16", "4:3", "3:4")


class BadInput(ValueError):
    """Input a member can fix; the message is shown to them as it is."""


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    negative_prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    model: str
    width: int = Field(ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8)
    height: int = Field(ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8)
    steps: int = Field(ge=1, le=MAX_STEPS)
    cfg: float = Field(ge=0.0, le=30.0)
    sampler: str
    seed: int = Field(ge=0, le=MAX_SEED)
    count: int = Field(ge=1, le=MAX_IMAGES_PER_JOB)
    mode: Mode = Mode.TXT2IMG
    # Input images, as paths relative to the data directory (saved by bot.jobs.inputs).
    init_image: str | None = None
    mask_image: str | None = None
    control_image: str | None = None
    control_type: ControlType = ControlType.CANNY
    control_scale: float = Field(1.0, ge=0.0, le=MAX_CONTROL_SCALE)
    strength: float = Field(0.75, ge=MIN_STRENGTH, le=1.0)
    # For variations and upscales: the job and image (1-based) they were made from.
    source_job: str | None = None
    source_image: int | None = None

    @property
    def seeds(self) -> list[int]:
        """Image i uses seed + i, so any single image can be re-made from its seed."""
        return [(self.seed + i) % (MAX_SEED + 1) for i in range(self.count)]

    def shared_params(self) -> SharedParams:
        """The settings this job shares with a batch; jobs batch when their `batch_key`s match."""
        return SharedParams.model_validate(self.model_dump(include=set(SharedParams.model_fields)))

    def batch_job(self, job_id: str, output_dir: Path, data_dir: Path) -> BatchJob:
        """This job's own part of a batch request, input paths made absolute."""
        fields = self.model_dump(include=set(BatchJob.model_fields) - {"job_id", "output_dir"})
        for name in ("init_image", "mask_image", "control_image"):
            if fields[name] is not None:
                fields[name] = str(data_dir / fields[name])
        return BatchJob(job_id=job_id, output_dir=str(output_dir), **fields)

    def to_request(
        self, job_id: str, output_dir: Path, data_dir: Path, preview_every: int = 0
    ) -> GenerateRequest:
        """A request of this job alone (a batch of one, named after the job)."""
        return GenerateRequest.for_jobs(
            job_id,
            self.shared_params(),
            [self.batch_job(job_id, output_dir, data_dir)],
            preview_every,
        )


@dataclass(frozen=True)
class InputImage:
    """An attachment that was checked and saved: path relative to the data directory."""

    path: str
    width: int
    height: int


@dataclass(frozen=True)
class Inputs:
    image: InputImage | None = None
    mask: InputImage | None = None
    control: InputImage | None = None


class Options(BaseModel):
    """What a member typed; None means 'use the model's default'."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str
    negative_prompt: str | None = None
    model: str | None = None
    aspect: str | None = None
    count: int | None = None
    seed: int | None = None
    steps: int | None = None
    cfg: float | None = None
    sampler: str | None = None
    strength: float | None = None
    control_type: ControlType | None = None
    control_scale: float | None = None

    def over(self, defaults: dict[str, object]) -> Self:
        """These options, with `defaults` (a member's own) filling the ones left out."""
        known = {key: value for key, value in defaults.items() if key in type(self).model_fields}
        return type(self).model_validate(known | self.model_dump(exclude_none=True))

    def merged(self, flags: Self) -> Self:
        """Explicit options win over flags written inside the prompt."""
        values = flags.model_dump(exclude_none=True) | self.model_dump(exclude_none=True)
        values["prompt"] = flags.prompt
        return type(self).model_validate(values)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clean_text(text: str) -> str:
    """Normalise Unicode, drop control and zero-width characters, fold white space."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return " ".join(_CONTROL.sub(" ", text).split())


# One token for a valued flag; --no takes every word up to the next flag.
_FLAG = re.compile(
    r"--(?:(?P<name>ar|aspect|seed|steps|cfg)\s+(?P<value>\S+)|no\s+(?P<no>(?:(?!--)\S+\s*)+))",
    re.IGNORECASE,
)


def blocked_term(text: str, terms: list[str]) -> str | None:
    """The first blocked term `text` contains as a whole word or phrase, ignoring case."""
    folded = clean_text(text).casefold()
    for term in terms:
        if re.search(rf"(?<!\w){re.escape(term.casefold())}(?!\w)", folded):
            return term
    return None


def parse_prompt_flags(prompt: str) -> Options:
    """Read Midjourney-style flags written in the prompt: --ar 16:9 --seed 42 --no text."""
    values: dict[str, object] = {}
    for match in _FLAG.finditer(prompt):
        name, value = (match["name"] or "").lower(), match["value"]
        if match["no"]:
            values["negative_prompt"] = match["no"].strip()
        elif name in ("ar", "aspect"):
            values["aspect"] = value
        else:
            try:
                values[name] = float(value) if name == "cfg" else int(value)
            except ValueError:
                raise BadInput(f"`--{name}` needs a number, not `{value}`.") from None
    return Options(prompt=_FLAG.sub("", prompt).strip(), **values)


def fit_aspect(aspect: str, base_width: int, base_height: int) -> tuple[int, int]:
    """Width and height for an aspect ratio, keeping the model's native pixel area."""
    if aspect not in ASPECTS:
        raise BadInput(f"Aspect `{aspect}` is not offered; choose one of {', '.join(ASPECTS)}.")
    ratio_w, ratio_h = (int(part) for part in aspect.split(":"))
    return fit_ratio(ratio_w / ratio_h, base_width * base_height)


def fit_ratio(ratio: float, area: float) -> tuple[int, int]:
    """Width and height (multiples of 8, within the limits) of `ratio` covering `area`."""
    width = math.sqrt(area * ratio)
    scale = min(1.0, MAX_SIDE / width, MAX_SIDE * ratio / width)

    def snap(side: float) -> int:
        return min(MAX_SIDE, max(MIN_SIDE, round(side * scale / 8) * 8))

    return snap(width), snap(width / ratio)


def find_sampler(name: str) -> str:
    """The sampler's canonical name, ignoring case; BadInput lists the valid ones."""
    for known in SAMPLER_NAMES:
        if known.casefold() == name.strip().casefold():
            return known
    raise BadInput(f"Unknown sampler `{name}`; choose one of: {', '.join(SAMPLER_NAMES)}.")


def _in_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise BadInput(f"`{name}` must be between {low:g} and {high:g} (you gave {value:g}).")


def build_spec(
    options: Options,
    models: dict[str, ModelSpec],
    default_model: str,
    inputs: Inputs = Inputs(),
    personal: dict[str, object] | None = None,
) -> JobSpec:
    """Turn a member's options into a JobSpec, or raise BadInput saying what to change.

    Precedence: options given, then flags in the prompt, then the member's
    `personal` defaults, then the model's.
    """
    options = options.merged(parse_prompt_flags(options.prompt)).over(personal or {})
    prompt = clean_text(options.prompt)
    if not prompt:
        raise BadInput("The prompt is empty: describe the image you want.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise BadInput(
            f"The prompt is {len(prompt):,} characters; the limit is {MAX_PROMPT_CHARS:,}."
            " The model reads only about the first 75 words anyway."
        )
    negative = clean_text(options.negative_prompt or "")
    if len(negative) > MAX_PROMPT_CHARS:
        raise BadInput(f"The negative prompt is over {MAX_PROMPT_CHARS:,} characters.")
    name = options.model or default_model
    if name not in models:
        raise BadInput(f"Unknown model `{name}`; available: {', '.join(sorted(models))}.")
    model = models[name]
    mode, guide = _mode_of(options, inputs, name, models)
    if options.aspect is None and guide is not None:
        # An input image sets the shape; the model's native area sets the size.
        width, height = fit_ratio(guide.width / guide.height, model.width * model.height)
    else:
        width, height = fit_aspect(options.aspect or "1:1", model.width, model.height)
    count = options.count if options.count is not None else 1
    _in_range("count", count, 1, MAX_IMAGES_PER_JOB)
    steps = options.steps if options.steps is not None else model.steps
    _in_range("steps", steps, 1, MAX_STEPS)
    cfg = options.cfg if options.cfg is not None else model.cfg
    _in_range("cfg", cfg, 0, 30)
    seed = options.seed if options.seed is not None else secrets.randbelow(MAX_SEED + 1)
    _in_range("seed", seed, 0, MAX_SEED)
    # Inpainting repaints the masked part from scratch by default; img2img keeps a quarter.
    strength = options.strength if options.strength is not None else (
        1.0 if mode is Mode.INPAINT else 0.75
    )  # fmt: skip
    _in_range("strength", strength, MIN_STRENGTH, 1.0)
    control_scale = options.control_scale if options.control_scale is not None else 1.0
    _in_range("control_scale", control_scale, 0, MAX_CONTROL_SCALE)
    return JobSpec(
        prompt=prompt,
        negative_prompt=negative,
        model=name,
        width=width,
        height=height,
        steps=steps,
        cfg=cfg,
        sampler=find_sampler(options.sampler or model.sampler),
        seed=seed,
        count=count,
        mode=mode,
        init_image=inputs.image.path if inputs.image else None,
        mask_image=inputs.mask.path if inputs.mask else None,
        control_image=inputs.control.path if inputs.control else None,
        control_type=options.control_type or ControlType.CANNY,
        control_scale=control_scale,
        strength=strength,
    )


def _mode_of(
    options: Options, inputs: Inputs, name: str, models: dict[str, ModelSpec]
) -> tuple[Mode, InputImage | None]:
    """The mode the attachments ask for, and the image whose shape the output takes."""
    if inputs.mask is not None and inputs.image is None:
        raise BadInput("A `mask` needs the `image` it applies to: attach both.")
    if inputs.control is not None and inputs.image is not None:
        raise BadInput(
            "Attach either `image` (image-to-image, inpainting) or `control` (ControlNet),"
            " not both."
        )
    if inputs.control is not None:
        kind = options.control_type or ControlType.CANNY
        if kind not in models[name].controlnets:
            able = sorted(m for m, spec in models.items() if kind in spec.controlnets)
            where = f"models that have one: {', '.join(able)}" if able else "no model has one"
            raise BadInput(f"Model `{name}` has no `{kind}` ControlNet configured; {where}.")
        return Mode.CONTROLNET, inputs.control
    if inputs.mask is not None:
        return Mode.INPAINT, inputs.image
    if inputs.image is not None:
        return Mode.IMG2IMG, inputs.image
    return Mode.TXT2IMG, None


def derived_spec(
    original: JobSpec,
    source: tuple[str, int],
    image: InputImage,
    mode: Mode,
    strength: float,
    seed: int,
) -> JobSpec:
    """A variation (same size, new seed) or a 2x upscale of one image of `original`.

    `source` is (job id, 1-based image number, as on the buttons); `image` is
    that output as stored.
    """
    if mode is Mode.UPSCALE:
        width, height = fit_ratio(image.width / image.height, 4 * image.width * image.height)
    else:
        width, height = image.width, image.height
    return original.model_copy(
        update={
            "mode": mode,
            "init_image": image.path,
            "mask_image": None,
            "control_image": None,
            "width": width,
            "height": height,
            "count": 1,
            "seed": seed,
            "strength": strength,
            "source_job": source[0],
            "source_image": source[1],
        }
    )
