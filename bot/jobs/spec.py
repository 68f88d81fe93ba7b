"""JobSpec: one validated request for images, and the pure rules that build it.

Everything here is pure (no Discord, no SQL, no GPU) so the rules a member
meets at the door are tested on their own.
"""

from __future__ import annotations

import math
import re
import secrets
import unicodedata
from typing import Self

from pydantic import BaseModel, ConfigDict, Field

from engine.protocol import (
    MAX_IMAGES_PER_JOB,
    MAX_SEED,
    MAX_SIDE,
    MAX_STEPS,
    MIN_SIDE,
    GenerateRequest,
    ModelSpec,
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

    @property
    def seeds(self) -> list[int]:
        """Image i uses seed + i, so any single image can be re-made from its seed."""
        return [(self.seed + i) % (MAX_SEED + 1) for i in range(self.count)]

    def to_request(self, job_id: str, output_dir: str) -> GenerateRequest:
        return GenerateRequest(job_id=job_id, output_dir=output_dir, **self.model_dump())


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
    area = base_width * base_height
    width = math.sqrt(area * ratio_w / ratio_h)
    height = width * ratio_h / ratio_w

    def snap(side: float) -> int:
        return min(MAX_SIDE, max(MIN_SIDE, round(side / 8) * 8))

    return snap(width), snap(height)


def _in_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise BadInput(f"`{name}` must be between {low:g} and {high:g} (you gave {value:g}).")


def build_spec(options: Options, models: dict[str, ModelSpec], default_model: str) -> JobSpec:
    """Turn a member's options into a JobSpec, or raise BadInput saying what to change."""
    options = options.merged(parse_prompt_flags(options.prompt))
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
    width, height = fit_aspect(options.aspect or "1:1", model.width, model.height)
    count = options.count if options.count is not None else 1
    _in_range("count", count, 1, MAX_IMAGES_PER_JOB)
    steps = options.steps if options.steps is not None else model.steps
    _in_range("steps", steps, 1, MAX_STEPS)
    cfg = options.cfg if options.cfg is not None else model.cfg
    _in_range("cfg", cfg, 0, 30)
    seed = options.seed if options.seed is not None else secrets.randbelow(MAX_SEED + 1)
    _in_range("seed", seed, 0, MAX_SEED)
    return JobSpec(
        prompt=prompt,
        negative_prompt=negative,
        model=name,
        width=width,
        height=height,
        steps=steps,
        cfg=cfg,
        sampler=options.sampler or model.sampler,
        seed=seed,
        count=count,
    )
