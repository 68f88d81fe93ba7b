"""Stability v1 requests into JobSpecs, and jobs back into Stability artifacts.

Pure rules (no aiohttp, no SQL, no GPU), so what an HTTP client meets at the door
is tested on its own. A request's prompts are plain text: Midjourney flags and
{a, b} choices are a Discord convenience, not read here.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

from PIL import Image, ImageOps
from pydantic import ValidationError

from engine.protocol import MAX_SIDE, MIN_SIDE, MIN_STOP, MIN_STRENGTH, Mode, ModelSpec

from ..jobs.inputs import CheckedImage, decode_image, finish, on_white, save_checked
from ..jobs.prompt_language import Style
from ..jobs.spec import (
    MAX_PROMPT_CHARS,
    BadInput,
    InputImage,
    Inputs,
    JobSpec,
    clean_text,
    fit_aspect,
    fit_ratio,
)
from ..store.models import Job, JobState
from .models import (
    Artifact,
    FinishReason,
    GenerationOptions,
    InitImageMode,
    MaskSource,
    Sampler,
    TextPrompt,
)

# Stability's samplers as the engine's (engine.samplers). The engine has no DDPM and no
# DPM++ 2S a: DDPM runs as Euler a (ancestral sampling, as DDPM's is), DPM++ 2S a as
# DPM++ SDE (second-order, single-step and stochastic, like it).
SAMPLERS: dict[Sampler, str] = {
    Sampler.DDIM: "DDIM",
    Sampler.DDPM: "Euler a",
    Sampler.K_DPMPP_2M: "DPM++ 2M",
    Sampler.K_DPMPP_2S_ANCESTRAL: "DPM++ SDE",
    Sampler.K_DPM_2: "DPM2",
    Sampler.K_DPM_2_ANCESTRAL: "DPM2 a",
    Sampler.K_EULER: "Euler",
    Sampler.K_EULER_ANCESTRAL: "Euler a",
    Sampler.K_HEUN: "Heun",
    Sampler.K_LMS: "LMS",
}
# Stability's style presets: accepted always, applied where a [styles.<name>] matches.
STABILITY_STYLES = frozenset(
    {
        "enhance",
        "anime",
        "photographic",
        "digital-art",
        "comic-book",
        "fantasy-art",
        "line-art",
        "analog-film",
        "neon-punk",
        "isometric",
        "low-poly",
        "origami",
        "modeling-compound",
        "cinematic",
        "3d-model",
        "pixel-art",
        "tile-texture",
    }
)
# A request may ask for up to this many times the model's native pixel count (as
# Stability's 512 engines allow up to 1024x1024).
MAX_PIXELS_FACTOR = 4
FILTERED_GREY = (128, 128, 128)
NO_INPUTS = Inputs()


class RequestError(BadInput):
    """A request the client can fix: the message names the field; `name` is Stability's
    error class (bad_request, invalid_pixel_count, ...)."""

    def __init__(self, field: str, message: str, name: str = "bad_request") -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.name = name


# -- prompts ------------------------------------------------------------------------------


def split_prompts(prompts: Sequence[TextPrompt]) -> tuple[str, str, tuple[tuple[str, float], ...]]:
    """(prompt, negative prompt, blend) from weighted prompts.

    A negative weight makes a negative prompt; weight 0 is left out. Positive prompts
    go heaviest first, joined; with several, `blend` keeps each with its weight.
    """
    cleaned = [(clean_text(p.text), p.weight) for p in prompts]
    positive = sorted(((t, w) for t, w in cleaned if t and w > 0), key=lambda tw: -tw[1])
    negative = sorted(((t, w) for t, w in cleaned if t and w < 0), key=lambda tw: tw[1])
    if not positive:
        raise RequestError(
            "text_prompts",
            "give at least one prompt with text and a positive weight"
            " (a negative weight makes a negative prompt)",
        )
    prompt = ", ".join(text for text, _ in positive)
    if len(prompt) > MAX_PROMPT_CHARS:
        raise RequestError(
            "text_prompts",
            f"the positive prompts are {len(prompt):,} characters together; the limit is"
            f" {MAX_PROMPT_CHARS:,}",
        )
    negative_prompt = ", ".join(text for text, _ in negative)
    if len(negative_prompt) > MAX_PROMPT_CHARS:
        raise RequestError(
            "text_prompts",
            f"the negative prompts are over {MAX_PROMPT_CHARS:,} characters together",
        )
    blend = tuple(positive) if len(positive) > 1 else ()
    return prompt, negative_prompt, blend


def apply_style(
    name: str | None, styles: dict[str, Style], prompt: str, negative: str
) -> tuple[str, str]:
    """The prompts with a configured style of that name applied; a Stability preset with
    no such style configured changes nothing; any other name is refused."""
    if name is None:
        return prompt, negative
    for known, style in styles.items():
        if known.casefold() == name.casefold():
            styled, styled_negative = style.apply(prompt, negative)
            styled, styled_negative = clean_text(styled), clean_text(styled_negative)
            if len(styled) > MAX_PROMPT_CHARS or len(styled_negative) > MAX_PROMPT_CHARS:
                raise RequestError(
                    "style_preset",
                    f"with style `{known}` the prompt is over {MAX_PROMPT_CHARS:,} characters",
                )
            return styled, styled_negative
    if name.casefold() in STABILITY_STYLES:
        return prompt, negative
    known_names = sorted({*STABILITY_STYLES, *styles})
    raise RequestError(
        "style_preset", f"unknown style `{name}`; use one of: {', '.join(known_names)}"
    )


# -- sizes and strengths ------------------------------------------------------------------


def max_pixels(model: ModelSpec) -> int:
    return MAX_PIXELS_FACTOR * model.width * model.height


def size_for(
    width: int | None,
    height: int | None,
    model: ModelSpec,
    aspect: str | None,
    guide: InputImage | None,
) -> tuple[int, int]:
    """The image size: an input image's own (fitted to the model when it is not a usable
    size), else the request's, else the member's default aspect, else the model's."""
    limit = max_pixels(model)
    if guide is not None:
        usable = (
            guide.width % 8 == 0
            and guide.height % 8 == 0
            and min(guide.width, guide.height) >= MIN_SIDE
            and max(guide.width, guide.height) <= MAX_SIDE
            and guide.width * guide.height <= limit
        )
        if usable:
            return guide.width, guide.height
        return fit_ratio(guide.width / guide.height, model.width * model.height)
    if width is None and height is None:
        if aspect:
            try:
                return fit_aspect(aspect, model.width, model.height)
            except BadInput:
                pass  # a stale personal default: the model's own size then
        return model.width, model.height
    size = (width or model.width, height or model.height)
    if size[0] * size[1] > limit:
        raise RequestError(
            "width",
            f"{size[0]}x{size[1]} is {size[0] * size[1]:,} pixels; this engine makes at most"
            f" {limit:,} (its native {model.width}x{model.height}, times {MAX_PIXELS_FACTOR})",
            "invalid_pixel_count",
        )
    return size


def strength_for(mode: InitImageMode, image_strength: float, step_schedule_start: float) -> float:
    """The engine's strength (how much is repainted) from Stability's image-to-image
    fields: 1 - image_strength, or step_schedule_start; at least the engine's minimum."""
    repaint = 1.0 - image_strength if mode is InitImageMode.IMAGE_STRENGTH else step_schedule_start
    return round(min(1.0, max(MIN_STRENGTH, repaint)), 4)


def stop_for(step_schedule_end: float | None) -> int:
    """The job's --stop (percent of the steps run) from the share of last steps to skip."""
    if step_schedule_end is None:
        return 100
    return max(MIN_STOP, round(100 * (1.0 - step_schedule_end)))


# -- the spec -----------------------------------------------------------------------------


def spec_for(
    request: GenerationOptions,
    prompts: Sequence[TextPrompt],
    model_name: str,
    models: dict[str, ModelSpec],
    personal: dict[str, object],
    styles: dict[str, Style],
    random_seed: Callable[[], int],
    *,
    inputs: Inputs = NO_INPUTS,
    size: tuple[int | None, int | None] = (None, None),
    strength: float | None = None,
    stop: int = 100,
) -> JobSpec:
    """The job a Stability request asks for, or RequestError naming the field.

    The member's own defaults (`personal`: sampler, steps, cfg, negative prompt,
    aspect) fill what the request leaves out, then the model's.
    """
    model = models[model_name]
    prompt, negative, blend = split_prompts(prompts)
    if not negative:
        negative = clean_text(str(personal.get("negative_prompt") or ""))[:MAX_PROMPT_CHARS]
    prompt, negative = apply_style(request.style_preset, styles, prompt, negative)
    mode = Mode.TXT2IMG
    if inputs.mask is not None:
        mode = Mode.INPAINT
    elif inputs.image is not None:
        mode = Mode.IMG2IMG
    aspect = personal.get("aspect")
    width, height = size_for(
        *size, model, aspect if isinstance(aspect, str) else None, inputs.image
    )
    sampler = (
        SAMPLERS[request.sampler]
        if request.sampler
        else str(personal.get("sampler") or model.sampler)
    )
    fields = {
        "prompt": prompt,
        "negative_prompt": negative,
        "model": model_name,
        "width": width,
        "height": height,
        "steps": request.steps or personal.get("steps") or model.steps,
        "cfg": request.cfg_scale
        if request.cfg_scale is not None
        else personal.get("cfg", model.cfg),
        "sampler": sampler,
        "seed": request.seed or random_seed(),
        "count": request.samples,
        "mode": mode,
        "init_image": inputs.image.path if inputs.image else None,
        "mask_image": inputs.mask.path if inputs.mask else None,
        "stop": stop,
        "blend": blend,
    }
    if mode is Mode.INPAINT:
        fields["strength"] = 1.0  # the masked part is repainted from scratch, as Stability's
    elif mode is Mode.IMG2IMG and strength is not None:
        fields["strength"] = strength
    try:
        return JobSpec.model_validate(fields)
    except ValidationError as error:  # a personal default out of today's range
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise RequestError(field, first["msg"]) from None


# -- images -------------------------------------------------------------------------------


def save_request_images(
    init_image: bytes,
    mask_image: bytes | None,
    mask_source: MaskSource | None,
    folder: Path,
    data_dir: Path,
    max_bytes: int,
) -> Inputs:
    """Check the request's images with the same hostile-input rules as Discord
    attachments (bot.jobs.inputs) and save them; the mask made white-repaints first.
    Each image is decoded once, the mask of INIT_IMAGE_ALPHA taken from init_image's.

    CPU work: callers on the event loop run it in a thread.
    """
    try:
        image = decode_image(init_image, "image", max_bytes)
        checked: dict[str, CheckedImage] = {}
        if mask_source is MaskSource.INIT_IMAGE_ALPHA:
            checked["mask"] = finish(_mask_from_alpha(image.image), "mask")
        elif mask_source is not None:
            if mask_image is None:
                raise RequestError(
                    "mask_image",
                    f"is required with mask_source {mask_source}",
                    "invalid_mask_image",
                )
            mask = decode_image(mask_image, "mask", max_bytes)
            white = mask_source is MaskSource.MASK_IMAGE_WHITE
            checked["mask"] = finish(mask.image if white else _inverted(mask.image), "mask")
        checked = {"image": finish(image.image, "image", image.notice), **checked}
        return save_checked(checked, folder, data_dir)
    except RequestError:
        raise
    except BadInput as error:
        raise _field_error(str(error)) from None


def _field_error(message: str) -> RequestError:
    """An attachment refusal reworded for the request field it is about."""
    field = "mask_image" if "`mask`" in message else "init_image"
    reworded = (
        message.replace("`image`", "`init_image`")
        .replace("`mask`", "`mask_image`")
        .replace(" attachment", "")
        .replace("attach", "send")
    )
    name = "invalid_mime_type" if "please send" in reworded else "bad_request"
    if " MB; the limit is " in reworded:
        name = "invalid_file_size"
    return RequestError(field, reworded, name)


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _mask_from_alpha(image: Image.Image) -> Image.Image:
    """White where init_image is transparent (repaint), black where it is opaque (keep)."""
    if image.mode not in ("RGBA", "LA", "PA", "RGBa", "La") and "transparency" not in image.info:
        raise RequestError(
            "init_image",
            "has no alpha channel; with mask_source INIT_IMAGE_ALPHA its transparent pixels"
            " are the ones repainted",
            "invalid_mask_image",
        )
    alpha = (image if image.mode in ("RGBA", "LA") else image.convert("RGBA")).getchannel("A")
    mask = ImageOps.invert(alpha)
    low, high = cast(tuple[int, int], mask.getextrema())
    if high < 128:
        raise RequestError(
            "init_image",
            "is opaque everywhere, so nothing would be repainted",
            "invalid_mask_image",
        )
    if low >= 128:
        raise RequestError(
            "init_image",
            "is transparent everywhere; use image-to-image to change the whole image",
            "invalid_mask_image",
        )
    return mask


def _inverted(mask_image: Image.Image) -> Image.Image:
    """A black-repaints mask as the engine's white-repaints one (transparent stays keep)."""
    return ImageOps.invert(on_white(mask_image).convert("L"))


def placeholder_png(width: int, height: int) -> bytes:
    """What a CONTENT_FILTERED artifact holds: a plain grey image of the asked size."""
    return _png(Image.new("RGB", (width, height), FILTERED_GREY))


# -- artifacts ----------------------------------------------------------------------------


def artifacts_of(job: Job, read: Callable[[str], bytes | None]) -> list[Artifact]:
    """A finished job as Stability artifacts, one per image it was to make.

    `read` gives an output's bytes by its stored path (None if the file is gone).
    Blocked: a grey image each, CONTENT_FILTERED. Failed or cancelled: ERROR each.
    Blocked covers the image filter too (bot.moderation.images). Succeeded: each
    image, SUCCESS, or a grey image, CONTENT_FILTERED, where moderation flagged it;
    an image whose file is gone is an ERROR.
    """
    seeds = list(job.seeds)
    if job.state is JobState.BLOCKED:
        grey = base64.b64encode(placeholder_png(job.spec.width, job.spec.height)).decode()
        return [
            Artifact(base64=grey, seed=s, finishReason=FinishReason.CONTENT_FILTERED) for s in seeds
        ]
    if job.state is not JobState.SUCCEEDED:
        return [Artifact(base64="", seed=s, finishReason=FinishReason.ERROR) for s in seeds]
    artifacts = []
    for output in job.outputs:
        if any(output.flags.get(flag) for flag in ("nsfw", "filtered", "blocked")):
            # As Stability does: the flagged image itself is never sent.
            grey = base64.b64encode(placeholder_png(output.width, output.height)).decode()
            artifacts.append(
                Artifact(base64=grey, seed=output.seed, finishReason=FinishReason.CONTENT_FILTERED)
            )
            continue
        data = read(output.path)
        if data is None:
            artifacts.append(Artifact(base64="", seed=output.seed, finishReason=FinishReason.ERROR))
            continue
        artifacts.append(
            Artifact(
                base64=base64.b64encode(data).decode(),
                seed=output.seed,
                finishReason=FinishReason.SUCCESS,
            )
        )
    return artifacts


def retry_after(seconds: float) -> str:
    """A Retry-After header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
