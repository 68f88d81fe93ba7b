"""JobSpec: one validated request for images, and the pure rules that build it.

Everything here is pure (no Discord, no SQL, no GPU) so the rules a member
meets at the door are tested on their own.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import unicodedata
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field

from engine.protocol import (
    MAX_CONTROL_SCALE,
    MAX_IMAGES_PER_JOB,
    MAX_LORAS,
    MAX_REFERENCE_SCALE,
    MAX_REFERENCES,
    MAX_SEED,
    MAX_SIDE,
    MAX_STEPS,
    MIN_SIDE,
    MIN_STOP,
    MIN_STRENGTH,
    BatchJob,
    ControlType,
    Family,
    Frame,
    GenerateRequest,
    LoraSpec,
    LoraWeight,
    Mode,
    ModelSpec,
    ReferenceMode,
    SharedParams,
    WeightedPrompt,
    consecutive_seeds,
    fewest_steps,
)
from engine.protocol import batch_key as protocol_batch_key

from ..moderation.blocklist import blocked_term as find_blocked
from .errors import BadInput as BadInput
from .prompt_language import (
    DEFAULT_MAX_PERMUTATIONS,
    MAX_ASPECT,
    MAX_CFG,
    MAX_STYLE_WEIGHT,
    LoraChoice,
    Style,
    expand_prompt,
    find_sampler,
    parse_aspect,
    parse_prompt,
)

MAX_PROMPT_CHARS = 1500
# What a member may type in all (prompt, flags, --no text) before it is read.
MAX_TYPED_CHARS = 3 * MAX_PROMPT_CHARS
# The /imagine aspect choices; the prompt's --ar takes any ratio from 1:4 to 4:1.
ASPECTS = ("1:1", "3:2", "2:3", "16:9", "9:16", "4:3", "3:4")


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
    # --chaos: how far the images of the job spread (image_seeds, image_cfgs).
    chaos: int = Field(0, ge=0, le=100)
    # --stop: the percentage of `steps` to run before decoding what is there.
    stop: int = Field(100, ge=MIN_STOP, le=100)
    # Several prompts with weights (HTTP `text_prompts`, heaviest first; a multi-prompt
    # `a::2 b::1`, in order): the engine averages their embeddings by weight; `prompt`
    # holds them as written, for people (history, metadata) and the blocklist.
    blend: tuple[tuple[str, float], ...] = ()
    # Outpainting (zoom out, make square, pan): where the source image lies on the canvas.
    frame: Frame | None = None
    # --tile: a seamless texture; kept by the jobs made from this one (V, U, remix, zoom).
    tile: bool = False
    # LoRAs (`<lora:name:0.8>`, the `lora` option): configured names at the weights they
    # run with, sorted by name; kept by the jobs made from this one.
    loras: tuple[LoraWeight, ...] = Field((), max_length=MAX_LORAS)
    # --draft: made with the model's few-step LoRA, draft steps, sampler and cfg (a
    # variation stays a draft; Enhance and Upscale make it at full quality).
    draft: bool = False
    # --sref (style) and /blend: reference images the model's IP-Adapter reads, paths
    # relative to the data directory (saved as inputs, as uploads are), and their scale.
    references: tuple[str, ...] = Field((), max_length=MAX_REFERENCES)
    reference_mode: ReferenceMode = ReferenceMode.STYLE
    reference_scale: float = Field(1.0, ge=0.0, le=MAX_REFERENCE_SCALE)

    @property
    def seeds(self) -> list[int]:
        """The seed of each image (see image_seeds)."""
        return image_seeds(self.seed, self.count, self.chaos)

    @property
    def cfgs(self) -> list[float]:
        """The cfg of each image (see image_cfgs)."""
        return image_cfgs(self.cfg, self.count, self.chaos)

    @property
    def input_paths(self) -> dict[str, str]:
        """The input images the job reads, by field name: paths relative to the data
        directory (a member's uploads, or an earlier job's outputs for V/U)."""
        paths = {
            "init_image": self.init_image,
            "mask_image": self.mask_image,
            "control_image": self.control_image,
            **{f"reference_{n}": path for n, path in enumerate(self.references, 1)},
        }
        return {name: path for name, path in paths.items() if path is not None}

    def shared_params(self, data_dir: Path | None = None) -> SharedParams:
        """The settings this job shares with a batch; with `data_dir`, its reference
        images' paths made absolute for the engine."""
        fields = self.model_dump(include=set(SharedParams.model_fields))
        if data_dir is not None:
            fields["references"] = tuple(str(data_dir / path) for path in self.references)
        return SharedParams.model_validate(fields)

    def batch_job(self, job_id: str, output_dir: Path, data_dir: Path) -> BatchJob:
        """This job's own part of a batch request, input paths made absolute; with
        --chaos each image's seed and cfg, and a blend's prompts with their weights."""
        own = set(BatchJob.model_fields) - {"job_id", "output_dir", "seeds", "cfgs", "blend"}
        fields = self.model_dump(include=own)
        for name in ("init_image", "mask_image", "control_image"):
            if fields[name] is not None:
                fields[name] = str(data_dir / fields[name])
        return BatchJob(
            job_id=job_id,
            output_dir=str(output_dir),
            seeds=self.seeds if self.chaos else None,
            cfgs=self.cfgs if self.chaos else None,
            blend=[WeightedPrompt(text=text, weight=weight) for text, weight in self.blend],
            **fields,
        )

    def to_request(
        self, job_id: str, output_dir: Path, data_dir: Path, preview_every: int = 0
    ) -> GenerateRequest:
        """A request of this job alone (a batch of one, named after the job)."""
        return GenerateRequest.for_jobs(
            job_id,
            self.shared_params(data_dir),
            [self.batch_job(job_id, output_dir, data_dir)],
            preview_every,
        )


def random_seed() -> int:
    """A seed drawn for a job that names none: never 0, which Stability's API (and so the
    HTTP door) reads as "draw one", so every seed a job shows can be asked for again."""
    return secrets.randbelow(MAX_SEED) + 1


def batch_key(spec: JobSpec) -> Hashable:
    """Jobs with equal keys can share one engine request, so the scheduler may batch
    them: the engine's own rule (engine.protocol.batch_key, --stop included). Jobs
    whose images differ in cfg (--chaos) still share it; the engine makes one
    pipeline call per cfg."""
    return protocol_batch_key(spec.shared_params())


def stored_batch_key(spec: JobSpec) -> str:
    """`batch_key` as the jobs table stores it (bot.store.models.Job.batch_key): a
    sha256 of the key's JSON, so a claim compares the waiting jobs' keys without
    parsing their specs (about 50 microseconds a row)."""
    key = protocol_batch_key(spec.shared_params())
    return hashlib.sha256(key.model_dump_json().encode()).hexdigest()


def image_seeds(seed: int, count: int, chaos: int = 0) -> list[int]:
    """The seed of each image of a job, from the job's seed and --chaos.

    Without chaos image i uses seed + i, so any single image can be re-made
    from its seed. With chaos, image 1 keeps `seed` and the others are spread
    over the whole seed range by a hash of (seed, chaos, i): deterministic,
    and not a run of neighbours. (Neighbouring seeds already give unrelated
    noise in Stable Diffusion; the spread chaos makes visible comes mostly
    from image_cfgs.)
    """
    if chaos == 0:
        return consecutive_seeds(seed, count)
    spread = [seed]
    for i in range(1, count):
        digest = hashlib.blake2b(f"{seed}:{chaos}:{i}".encode(), digest_size=8).digest()
        spread.append(int.from_bytes(digest) % (MAX_SEED + 1))
    return spread


def image_cfgs(cfg: float, count: int, chaos: int = 0) -> list[float]:
    """The cfg of each image of a job: within ±chaos% of `cfg`, image 1 at `cfg`.

    The others step away from it in turn above and below (+1, -1, +2, -2, ...
    steps), the farthest at ±chaos% (kept within 0-30), rounded to 0.01.
    """
    reach = math.ceil((count - 1) / 2)
    cfgs = []
    for i in range(count):
        steps_away = (i + 1) // 2 * (1 if i % 2 else -1)
        offset = cfg * chaos / 100 * steps_away / reach if reach else 0.0
        cfgs.append(round(min(MAX_CFG, max(0.0, cfg + offset)), 2))
    return cfgs


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
    # Style references (--sref) or the images of a /blend, in order.
    references: tuple[InputImage, ...] = ()
    # Sentences for the member about how an attachment was read ("used its first frame").
    notices: tuple[str, ...] = ()


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
    style: str | None = None
    chaos: int | None = None
    stop: int | None = None
    # An exact size in pixels (the HTTP API's width and height): wins over the aspect.
    width: int | None = None
    height: int | None = None
    # Weighted prompts (the HTTP API's text_prompts), heaviest first: see JobSpec.blend.
    blend: tuple[tuple[str, float], ...] = ()
    tile: bool | None = None
    # The `lora` option's (HTTP: `loras`), beside the prompt's own <lora:…> tags.
    loras: tuple[LoraChoice, ...] = ()
    draft: bool | None = None
    # --sref: results to take the style of (job ids, `<job>/<image>`, links), found by
    # bot.core.door into `Inputs.references`; a blend (/blend) reads its images whole.
    references: tuple[str, ...] = ()
    reference_mode: ReferenceMode | None = None
    # --sw: Midjourney's style weight, 0-1000 (100 when not given): see reference_scale.
    style_weight: int | None = None

    def over(self, defaults: dict[str, object]) -> Self:
        """These options, with `defaults` (a member's own) filling the ones left out."""
        known = {key: value for key, value in defaults.items() if key in type(self).model_fields}
        return type(self).model_validate(known | self.model_dump(exclude_none=True))

    def merged(self, flags: Self) -> Self:
        """Explicit options win over flags written inside the prompt."""
        values = flags.model_dump(exclude_none=True) | self.model_dump(exclude_none=True)
        values["prompt"] = flags.prompt
        # The blend is the prompt's own (a multi-prompt) unless the options give one.
        values["blend"] = self.blend or flags.blend
        # The prompt's LoRA tags and the option's together; one named in both takes the
        # option's weight.
        given = {lora.name.casefold(): lora for lora in (*flags.loras, *self.loras)}
        values["loras"] = tuple(given.values())
        values["references"] = self.references + flags.references
        return type(self).model_validate(values)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clean_text(text: str) -> str:
    """Normalise Unicode, drop control and zero-width characters, fold white space."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return " ".join(_CONTROL.sub(" ", text).split())


# Prompts the blocklist reads per typed text; more is refused when the jobs are built.
_BLOCKLIST_EXPANSIONS = 1024
# Prompt weights as the engine reads them (engine.prompts): `(word:1.3)`, `(word)1.3`,
# `word++`, `(word)-`, `[word]`. The text encoder reads the words they weight as if the
# brackets and signs were not there, so the blocklist reads them that way too.
_WEIGHT_NUMBER = re.compile(r":\s*[0-9]*\.?[0-9]+\s*(?=\))|(?<=\))[0-9]*\.?[0-9]+")
_WEIGHT_SIGNS = re.compile(r"(?<=[\w)])[-+]+|[()\[\]]")


def blocked_term(text: str, terms: list[str]) -> str | None:
    """The blocked term `text` contains, however disguised (bot.moderation.blocklist).

    Each prompt its {…} choices make is read too, as `{go,}re` makes "gore", and the
    text with its prompt weights taken out, as `(g)ore` reads "gore".
    """
    cleaned = clean_text(text)
    unweighted = _WEIGHT_SIGNS.sub("", _WEIGHT_NUMBER.sub("", cleaned))
    try:
        texts = [cleaned, unweighted, *expand_prompt(cleaned, _BLOCKLIST_EXPANSIONS)]
    except BadInput:
        texts = [cleaned]  # broken or too many choices: refused when the jobs are built
    for candidate in texts:
        if (found := find_blocked(candidate, terms)) is not None:
            return found
    return None


def parse_prompt_flags(prompt: str) -> Options:
    """The flags of one prompt as Options (its --n is ParsedPrompt.repeat, not kept here)."""
    parsed = parse_prompt(prompt)
    return Options.model_validate({"prompt": parsed.prompt, **parsed.option_values()})


# Multiples of 64 are preferred when they fit this closely (see fit_size).
GRID_TOLERANCE = 0.02


def fit_aspect(aspect: str, base_width: int, base_height: int) -> tuple[int, int]:
    """Width and height for an aspect "W:H" (1:4 to 4:1) at the model's pixel area."""
    ratio_w, ratio_h = parse_aspect(aspect)
    return fit_size(ratio_w / ratio_h, base_width * base_height)


def fit_size(ratio: float, area: float) -> tuple[int, int]:
    """Width and height of a new image of `ratio` covering about `area` pixels.

    Sides are multiples of 8, the size grid of Stable Diffusion (its latent
    is an eighth of the image). Multiples of 64 are preferred: the UNet
    halves the latent up to three times, and sides that halve evenly are the
    sizes checkpoints were trained on. The rule: of the sizes with both sides
    on the 64 grid next to the exact fit, the closest is taken when its
    ratio and its area are both within 2% (GRID_TOLERANCE) of the target;
    otherwise the closest size on the 8 grid (fit_ratio). So 16:9 at
    1024x1024 is 1344x768 (1.6% off), but at 512x512 it is 680x384, as
    704x384 would be 3.1% too wide.
    """
    width, height = _ideal_sides(ratio, area)

    def error(size: tuple[int, int]) -> float:
        return max(
            abs(size[0] / size[1] / ratio - 1), abs(size[0] * size[1] / (width * height) - 1)
        )

    candidates = [
        (w, h)
        for w in (math.floor(width / 64) * 64, math.ceil(width / 64) * 64)
        for h in (math.floor(height / 64) * 64, math.ceil(height / 64) * 64)
        if min(w, h) >= MIN_SIDE and max(w, h) <= MAX_SIDE
    ]
    best = min(candidates, key=error, default=None)
    if best is not None and error(best) <= GRID_TOLERANCE:
        return best
    return fit_ratio(ratio, area)


def fit_ratio(ratio: float, area: float) -> tuple[int, int]:
    """Width and height (multiples of 8, within the limits) of `ratio` covering `area`.

    The closest fit on the 8 grid, used as it is where an image's shape must be
    kept (an input image, an upscale).
    """
    width, height = _ideal_sides(ratio, area)

    def snap(side: float) -> int:
        return min(MAX_SIDE, max(MIN_SIDE, round(side / 8) * 8))

    return snap(width), snap(height)


def _ideal_sides(ratio: float, area: float) -> tuple[float, float]:
    """Exact sides of `ratio` covering `area`, scaled to keep both within the side limits.

    A small model's area grows rather than the ratio bending when the short
    side would fall under the smallest side (1:4 at 64x64 is 64x256).
    """
    width = math.sqrt(area * ratio)
    height = width / ratio
    scale = min(max(1.0, MIN_SIDE / min(width, height)), MAX_SIDE / max(width, height))
    return width * scale, height * scale


def _in_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise BadInput(f"`{name}` must be between {low:g} and {high:g} (you gave {value:g}).")


def build_specs(
    options: Options,
    models: dict[str, ModelSpec],
    default_model: str,
    inputs: Inputs = Inputs(),
    personal: dict[str, object] | None = None,
    styles: dict[str, Style] | None = None,
    max_permutations: int = DEFAULT_MAX_PERMUTATIONS,
    *,
    plain: bool = False,
    loras: Mapping[str, LoraSpec] | None = None,
) -> list[JobSpec]:
    """Every job a member's options ask for, or BadInput saying what to change.

    The prompt's {…} choices make one prompt each (at most `max_permutations`),
    and each prompt's --n makes that many jobs of it: the jobs are the
    permutations x repeats, in order, all checked before any is returned so
    they can be reserved together. Precedence, per job: options given, then
    flags in the prompt, then the member's `personal` defaults, then the
    model's. With no seed given, one random seed serves every permutation (so
    they differ only by their text); the repeats of a prompt go on from it,
    job k at seed + k x count. A `plain` prompt (the HTTP API's) is read as it is
    written: one job, no flags, no {…} choices. `loras` are the configured LoRAs the
    options may name.
    """
    typed = clean_text(options.prompt)
    if len(typed) > MAX_TYPED_CHARS:
        raise BadInput(_too_long(typed))
    seed = random_seed()
    if plain:
        merged = options.over(personal or {})
        one = _build_one(merged, models, default_model, inputs, styles or {}, seed)
        return [_with_adapters(one, merged, models, loras or {})]
    specs = []
    for text in expand_prompt(typed, max_permutations):
        parsed = parse_prompt(text)
        flags = Options.model_validate({"prompt": parsed.prompt, **parsed.option_values()})
        merged = options.merged(flags).over(personal or {})
        first = _build_one(merged, models, default_model, inputs, styles or {}, seed)
        first = _with_adapters(first, merged, models, loras or {})
        specs += [
            first.model_copy(update={"seed": (first.seed + k * first.count) % (MAX_SEED + 1)})
            for k in range(parsed.repeat)
        ]
    return specs


def build_spec(
    options: Options,
    models: dict[str, ModelSpec],
    default_model: str,
    inputs: Inputs = Inputs(),
    personal: dict[str, object] | None = None,
    styles: dict[str, Style] | None = None,
    max_permutations: int = DEFAULT_MAX_PERMUTATIONS,
) -> JobSpec:
    """The one job a member's options ask for (see build_specs).

    For callers that queue one job: a prompt that makes several ({…} choices
    or --n) is refused with BadInput rather than cut to its first job.
    """
    specs = build_specs(options, models, default_model, inputs, personal, styles, max_permutations)
    if len(specs) > 1:
        raise BadInput(
            f"This prompt makes {len(specs)} jobs ({{…}} choices or --n), but here one is"
            " made at a time: remove the choices and --n."
        )
    return specs[0]


def _too_long(prompt: str, style: str | None = None) -> str:
    where = f"With style `{style}` the prompt" if style else "The prompt"
    return (
        f"{where} is {len(prompt):,} characters; the limit is {MAX_PROMPT_CHARS:,}."
        " The model reads only about the first 75 words anyway."
    )


def styled_blend(
    blend: tuple[tuple[str, float], ...], style: Style
) -> tuple[tuple[str, float], ...]:
    """A blend with `style` applied to each of its prompts: every prompt the engine
    encodes is styled, as the one prompt of a job without a blend is."""
    return tuple((clean_text(style.apply(text, "")[0]), weight) for text, weight in blend)


def find_style(name: str, styles: dict[str, Style]) -> Style:
    """The style named `name` (ignoring case); BadInput lists the configured ones."""
    for known, style in styles.items():
        if known.casefold() == name.casefold():
            return style
    available = f"available: {', '.join(sorted(styles))}" if styles else "none is configured"
    raise BadInput(f"Unknown style `{name}`; {available}.")


def _build_one(
    options: Options,
    models: dict[str, ModelSpec],
    default_model: str,
    inputs: Inputs,
    styles: dict[str, Style],
    random_seed: int,
) -> JobSpec:
    """One JobSpec from options already merged with flags and personal defaults."""
    prompt = clean_text(options.prompt)
    if not prompt and options.reference_mode is ReferenceMode.BLEND:
        prompt = BLEND_PROMPT
    if not prompt:
        raise BadInput("The prompt is empty: describe the image you want.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise BadInput(_too_long(prompt))
    negative = clean_text(options.negative_prompt or "")
    if len(negative) > MAX_PROMPT_CHARS:
        raise BadInput(f"The negative prompt is over {MAX_PROMPT_CHARS:,} characters.")
    blend = options.blend
    if options.style is not None:
        style = find_style(options.style, styles)
        prompt, negative = style.apply(prompt, negative)
        prompt, negative = clean_text(prompt), clean_text(negative)
        blend = styled_blend(blend, style)
        if len(prompt) > MAX_PROMPT_CHARS:
            raise BadInput(_too_long(prompt, options.style))
        if len(negative) > MAX_PROMPT_CHARS:
            raise BadInput(
                f"With style `{options.style}` the negative prompt is over"
                f" {MAX_PROMPT_CHARS:,} characters."
            )
    name = options.model or default_model
    if name not in models:
        raise BadInput(f"Unknown model `{name}`; available: {', '.join(sorted(models))}.")
    model = models[name]
    mode, guide = _mode_of(options, inputs, name, models)
    if options.width is not None and options.height is not None:
        width, height = options.width, options.height
    elif options.aspect is None and guide is not None:
        # An input image sets the shape; the model's native area sets the size.
        width, height = fit_ratio(guide.width / guide.height, model.width * model.height)
    else:
        width, height = fit_aspect(options.aspect or "1:1", model.width, model.height)
    count = options.count if options.count is not None else 1
    _in_range("count", count, 1, MAX_IMAGES_PER_JOB)
    steps = options.steps if options.steps is not None else model.steps
    _in_range("steps", steps, 1, MAX_STEPS)
    cfg = options.cfg if options.cfg is not None else model.cfg
    _in_range("cfg", cfg, 0, MAX_CFG)
    seed = options.seed if options.seed is not None else random_seed
    _in_range("seed", seed, 0, MAX_SEED)
    chaos = options.chaos if options.chaos is not None else 0
    _in_range("chaos", chaos, 0, 100)
    stop = options.stop if options.stop is not None else 100
    _in_range("stop", stop, MIN_STOP, 100)
    # Inpainting repaints the masked part from scratch by default; img2img keeps a quarter.
    strength = (
        options.strength
        if options.strength is not None
        else (1.0 if mode is Mode.INPAINT else 0.75)
    )
    _in_range("strength", strength, MIN_STRENGTH, 1.0)
    control_scale = options.control_scale if options.control_scale is not None else 1.0
    _in_range("control_scale", control_scale, 0, MAX_CONTROL_SCALE)
    if inputs.image is not None:
        _check_denoising(steps, strength)
    references, reference_mode, scale = _references_of(options, inputs, name, models)
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
        chaos=chaos,
        stop=stop,
        blend=blend,
        tile=bool(options.tile),
        references=references,
        reference_mode=reference_mode,
        reference_scale=scale,
    )


# A /blend's prompt when none is given: neutral words, as diffusers' IP-Adapter guide uses
# for image variations, so the images decide what is drawn.
BLEND_PROMPT = "best quality, high quality"
DEFAULT_STYLE_WEIGHT = 100
# How many images a /blend takes.
MIN_BLEND = 2


def reference_scale(style_weight: int) -> float:
    """The IP-Adapter scale of a --sw weight (Midjourney's 0-1000, 100 by default):
    0-100 is the scale 0-1 (1: the adapter as trained), 100-1000 goes on to the engine's
    strongest, 2, in even steps; so the default is the trained strength and 1000 is the
    most the engine takes."""
    _in_range("--sw", style_weight, 0, MAX_STYLE_WEIGHT)
    if style_weight <= DEFAULT_STYLE_WEIGHT:
        return style_weight / DEFAULT_STYLE_WEIGHT
    above = (style_weight - DEFAULT_STYLE_WEIGHT) / (MAX_STYLE_WEIGHT - DEFAULT_STYLE_WEIGHT)
    return round(1.0 + above * (MAX_REFERENCE_SCALE - 1.0), 4)


def _references_of(
    options: Options, inputs: Inputs, name: str, models: dict[str, ModelSpec]
) -> tuple[tuple[str, ...], ReferenceMode, float]:
    """A job's reference images, their mode and scale, or BadInput: a model without an
    IP-Adapter takes none, a blend takes 2 to 5."""
    mode = options.reference_mode or ReferenceMode.STYLE
    images = inputs.references
    if mode is ReferenceMode.BLEND and not MIN_BLEND <= len(images) <= MAX_REFERENCES:
        raise BadInput(
            f"A blend takes {MIN_BLEND} to {MAX_REFERENCES} images; you gave {len(images)}."
        )
    if not images and not options.references:
        if options.style_weight is not None:
            raise BadInput("`--sw` weighs a style reference: add `--sref` with an image.")
        return (), ReferenceMode.STYLE, 1.0
    if len(images) > MAX_REFERENCES:
        raise BadInput(
            f"A job takes at most {MAX_REFERENCES} reference images; you gave {len(images)}."
        )
    _check_ip_adapter(name, models)
    weight = options.style_weight if options.style_weight is not None else DEFAULT_STYLE_WEIGHT
    return tuple(image.path for image in images), mode, reference_scale(weight)


def _check_ip_adapter(name: str, models: dict[str, ModelSpec]) -> None:
    """Refuse reference images for a model with no IP-Adapter (and image encoder)."""
    model = models[name]
    if model.ip_adapter is not None and model.image_encoder is not None:
        return
    able = sorted(m for m, spec in models.items() if spec.ip_adapter and spec.image_encoder)
    where = f"models that have one: {', '.join(able)}" if able else "no model here has one"
    raise BadInput(
        f"Model `{name}` has no IP-Adapter configured, so it takes no style reference"
        f" (`--sref`) or blend; {where}."
    )


FAMILY_NAMES = {Family.SD: "SD 1.x/2.x", Family.SDXL: "SDXL"}


def _with_adapters(
    spec: JobSpec, options: Options, models: dict[str, ModelSpec], loras: Mapping[str, LoraSpec]
) -> JobSpec:
    """`spec` with the LoRAs its options name (weights resolved, trigger words added) and,
    with --draft, the model's draft settings; BadInput for what the model cannot take."""
    if not options.loras and not options.draft:
        return spec
    update: dict[str, object] = {}
    if options.loras:
        update["loras"], triggers = _resolved_loras(options.loras, spec, models, loras)
        if triggers:
            words = ", ".join(triggers)
            update["prompt"] = f"{spec.prompt}, {words}"
            update["blend"] = tuple((f"{text}, {words}", w) for text, w in spec.blend)
            if len(str(update["prompt"])) > MAX_PROMPT_CHARS:
                raise BadInput(_too_long(str(update["prompt"])))
    if options.draft:
        update |= draft_settings(spec.model, models)
    changed = JobSpec.model_validate({**spec.model_dump(), **update})
    if changed.init_image is not None:
        _check_denoising(changed.steps, changed.strength)
    return changed


def _resolved_loras(
    choices: tuple[LoraChoice, ...],
    spec: JobSpec,
    models: dict[str, ModelSpec],
    loras: Mapping[str, LoraSpec],
) -> tuple[tuple[LoraWeight, ...], list[str]]:
    """The configured LoRAs `choices` name, sorted by name at their weights, and the trigger
    words the prompt lacks; BadInput for an unknown LoRA or one of another family."""
    if len(choices) > MAX_LORAS:
        raise BadInput(f"A job takes at most {MAX_LORAS} LoRAs; you gave {len(choices)}.")
    family = models[spec.model].family
    if family is None:
        raise BadInput(
            f"Model `{spec.model}` takes no LoRAs here: its family is not known (an admin sets"
            f" `family` in [models.{spec.model}])."
        )
    fitting = sorted(name for name, lora in loras.items() if lora.family is family)
    resolved, triggers = [], []
    for choice in choices:
        name = next((known for known in loras if known.casefold() == choice.name.casefold()), None)
        if name is None:
            where = (
                f"LoRAs for `{spec.model}`: {', '.join(fitting)}"
                if fitting
                else (f"none is configured for `{spec.model}`")
            )
            raise BadInput(f"Unknown LoRA `{choice.name}`; {where}.")
        lora = loras[name]
        if lora.family is not family:
            raise BadInput(
                f"LoRA `{name}` is made for {FAMILY_NAMES[lora.family]} models and `{spec.model}`"
                f" is {FAMILY_NAMES[family]}: pick a model of its family or another LoRA."
            )
        weight = choice.weight if choice.weight is not None else lora.weight
        resolved.append(LoraWeight(name=name, weight=weight))
        triggers += [
            word
            for word in lora.triggers
            if word.casefold() not in spec.prompt.casefold() and word not in triggers
        ]
    return tuple(sorted(resolved, key=lambda lora: lora.name)), triggers


def draft_settings(name: str, models: dict[str, ModelSpec]) -> dict[str, object]:
    """What --draft sets on a job of model `name`: its draft LoRA, steps, sampler and cfg
    (they replace any given); BadInput where the model has no draft mode."""
    model = models[name]
    if model.draft_lora is None:
        able = sorted(m for m, spec in models.items() if spec.draft_lora is not None)
        where = f"models that have one: {', '.join(able)}" if able else "no model here has one"
        raise BadInput(f"Model `{name}` has no draft mode (`--draft`); {where}.")
    return {
        "draft": True,
        "steps": model.draft_steps,
        "sampler": model.draft_scheduler,
        "cfg": model.draft_cfg,
    }


def available_model(name: str, models: Mapping[str, ModelSpec]) -> ModelSpec:
    """The configured model `name` that an earlier job used; BadInput when it has been
    removed from the config since."""
    model = models.get(name)
    if model is None:
        raise BadInput(f"Model `{name}` is no longer available here.")
    return model


def enhanced_spec(original: JobSpec, models: dict[str, ModelSpec]) -> JobSpec:
    """A draft made again at full quality (Enhance, and Upscale of a draft): the same
    prompt, seeds, size and LoRAs, with the model's own steps, sampler and cfg and no
    draft LoRA; BadInput for a job that is no draft."""
    if not original.draft:
        raise BadInput("This job is not a draft: Enhance makes a `--draft` job at full quality.")
    model = available_model(original.model, models)
    return original.model_copy(
        update={"draft": False, "steps": model.steps, "sampler": model.sampler, "cfg": model.cfg}
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
    return _from_image(
        original, source, image, mode, None, (width, height), strength=strength, seed=seed
    )


def _from_image(
    original: JobSpec,
    source: tuple[str, int],
    image: InputImage,
    mode: Mode,
    frame: Frame | None,
    size: tuple[int, int],
    *,
    strength: float,
    seed: int,
) -> JobSpec:
    """One image of `original` (`source`: job id, 1-based number) as the init image of a
    new job of one image: a variation, an upscale or an outpainting."""
    return original.model_copy(
        update={
            "mode": mode,
            "init_image": image.path,
            "mask_image": None,
            "control_image": None,
            "frame": frame,
            "width": size[0],
            "height": size[1],
            "count": 1,
            "seed": seed,
            "strength": strength,
            # A job of few steps still gets one denoising step at this strength.
            "steps": max(original.steps, fewest_steps(strength)),
            "source_job": source[0],
            "source_image": source[1],
        }
    )


@dataclass(frozen=True, kw_only=True)
class Growth:
    """How an outpainting action grows a picture's canvas: what it adds on each side, as a
    fraction of the picture's own width (left, right) or height (top, bottom)."""

    left: float = 0.0
    right: float = 0.0
    top: float = 0.0
    bottom: float = 0.0

    @classmethod
    def zoom(cls, factor: float) -> Growth:
        """The picture at 1/`factor` of the canvas's sides, in its middle."""
        each = (factor - 1) / 2
        return cls(left=each, right=each, top=each, bottom=each)

    @classmethod
    def square(cls, width: int, height: int) -> Growth:
        """The short sides grown evenly until the canvas is square."""
        across = (height / width - 1) / 2 if height > width else 0.0
        down = (width / height - 1) / 2 if width > height else 0.0
        return cls(left=across, right=across, top=down, bottom=down)


def outpainted_spec(
    original: JobSpec,
    source: tuple[str, int],
    image: InputImage,
    growth: Growth,
    area: int,
    strength: float,
    seed: int,
) -> JobSpec:
    """One image of `original` on a canvas grown by `growth`, the new border to be painted
    (Mode.OUTPAINT), or BadInput.

    The grown canvas keeps its shape and is fitted to `area` pixels (the model's), so the
    picture shrinks into its frame; `source` is (job id, 1-based image number).
    """
    canvas_width = image.width * (1 + growth.left + growth.right)
    canvas_height = image.height * (1 + growth.top + growth.bottom)
    if max(canvas_width / canvas_height, canvas_height / canvas_width) > MAX_ASPECT:
        raise BadInput(
            f"Image {source[1]} cannot grow that way: ratios go from 1:{MAX_ASPECT}"
            f" to {MAX_ASPECT}:1."
        )
    width, height = fit_ratio(canvas_width / canvas_height, area)
    across, down = width / canvas_width, height / canvas_height
    left, top = round(image.width * growth.left * across), round(image.height * growth.top * down)
    frame = Frame(
        left=left,
        top=top,
        width=min(width - left, round(image.width * across)),
        height=min(height - top, round(image.height * down)),
    )
    if frame.problem_on(width, height) is not None:
        raise BadInput(f"Image {source[1]} already fills that canvas: there is no border to paint.")
    return _from_image(
        original, source, image, Mode.OUTPAINT, frame, (width, height), strength=strength, seed=seed
    )


def rerolled_spec(original: JobSpec, seed: int) -> JobSpec:
    """The same job with a new seed (🔄): same words, size, inputs and settings."""
    return original.model_copy(update={"seed": seed})


def remixed_spec(
    original: JobSpec,
    text: str,
    negative: str,
    models: dict[str, ModelSpec],
    styles: dict[str, Style] | None = None,
) -> JobSpec:
    """The job again with new words and the same seeds (✏️ Remix), or BadInput.

    Flags in `text` change what they name: `--seed`, `--steps`, `--cfg`,
    `--sampler`, `--chaos`, `--stop`, `--tile`, `--style`, `--no` (instead of `negative`),
    `--model` and `--ar` (only where no input image sets the shape). A remix is
    one job, so {…} choices and `--n` are refused.
    """
    typed = clean_text(text)
    if len(typed) > MAX_TYPED_CHARS:
        raise BadInput(_too_long(typed))
    if len(expand_prompt(typed, DEFAULT_MAX_PERMUTATIONS)) > 1:
        raise BadInput("A remix makes one job: remove the {…} choices.")
    parsed = parse_prompt(typed)
    if parsed.repeat != 1:
        raise BadInput("A remix makes one job: remove `--n`.")
    if parsed.loras:
        raise BadInput("A remix keeps the job's LoRAs: remove the `<lora:…>` tags.")
    if parsed.references:
        raise BadInput("A remix keeps the job's style references: remove `--sref`.")
    prompt = parsed.prompt
    if parsed.negative_prompt is not None:
        negative = parsed.negative_prompt
    negative = clean_text(negative)
    if not prompt:
        raise BadInput("The prompt is empty: describe the image you want.")
    # The new words' multi-prompt, or none: the original's blend is of its old words.
    blend = parsed.blend or ()
    if parsed.style is not None:
        style = find_style(parsed.style, styles or {})
        prompt, negative = style.apply(prompt, negative)
        prompt, negative = clean_text(prompt), clean_text(negative)
        blend = styled_blend(blend, style)
    if len(prompt) > MAX_PROMPT_CHARS:
        raise BadInput(_too_long(prompt, parsed.style))
    if len(negative) > MAX_PROMPT_CHARS:
        raise BadInput(f"The negative prompt is over {MAX_PROMPT_CHARS:,} characters.")
    update: dict[str, object] = {"prompt": prompt, "negative_prompt": negative, "blend": blend}
    for name in ("seed", "steps", "cfg", "sampler", "chaos", "stop", "tile"):
        if (value := getattr(parsed, name)) is not None:
            update[name] = value
    name = parsed.model or original.model
    if name not in models:
        raise BadInput(f"Unknown model `{name}`; available: {', '.join(sorted(models))}.")
    controlnet = original.mode is Mode.CONTROLNET
    if controlnet and original.control_type not in models[name].controlnets:
        raise BadInput(f"Model `{name}` has no `{original.control_type}` ControlNet configured.")
    update["model"] = name
    if original.references:
        _check_ip_adapter(name, models)
    if parsed.style_weight is not None:
        if not original.references:
            raise BadInput("`--sw` weighs a style reference, and this job has none.")
        update["reference_scale"] = reference_scale(parsed.style_weight)
    if parsed.aspect is not None:
        if original.mode is not Mode.TXT2IMG:
            raise BadInput("`--ar` cannot change a job made from an image: its shape is kept.")
        model = models[name]
        update["width"], update["height"] = fit_aspect(parsed.aspect, model.width, model.height)
    elif name != original.model and original.mode is Mode.TXT2IMG:
        model = models[name]
        ratio = original.width / original.height
        update["width"], update["height"] = fit_size(ratio, model.width * model.height)
    if parsed.draft and not original.draft:
        update |= draft_settings(name, models)
    remixed = JobSpec.model_validate({**original.model_dump(), **update})
    if remixed.init_image is not None:
        _check_denoising(remixed.steps, remixed.strength)
    return remixed


def _check_denoising(steps: int, strength: float) -> None:
    """An image-to-image job runs int(steps x strength) denoising steps: refused before
    it is queued when that is none (the engine would fail it)."""
    if steps < (fewest := fewest_steps(strength)):
        raise BadInput(
            f"With `strength` {strength:g}, {steps} steps leave no denoising step:"
            f" use at least {fewest} steps or a higher strength."
        )
