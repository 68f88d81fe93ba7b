"""Stability v1 requests into the core's Options, and jobs back into Stability artifacts.

Pure rules (no aiohttp, no SQL, no GPU), so what an HTTP client meets at the door
is tested on its own. A request's prompts are plain text: Midjourney flags and
{a, b} choices are a Discord convenience, not read here.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import cast

from PIL import Image, ImageOps

from engine.protocol import MAX_SIDE, MIN_SIDE, MIN_STOP, MIN_STRENGTH, ModelSpec

from ..core.views import Job, JobState
from ..jobs.inputs import CheckedImage, decode_image, finish, on_white, save_checked
from ..jobs.prompt_language import LoraChoice, Style
from ..jobs.spec import (
    MAX_PROMPT_CHARS,
    BadInput,
    InputImage,
    Inputs,
    Options,
    clean_text,
    fit_ratio,
)
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
# The Stability preset that asks for a seamless texture: the job is tiled (--tile), and
# a `[styles.tile-texture]` is applied too where one is configured.
TILE_PRESET = "tile-texture"
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


def style_named(name: str | None, styles: Mapping[str, Style]) -> str | None:
    """The configured style a `style_preset` names (the core applies it); None for no
    preset or a Stability preset with no such style configured; any other name is
    refused."""
    if name is None:
        return None
    for known in styles:
        if known.casefold() == name.casefold():
            return known
    if name.casefold() in STABILITY_STYLES:
        return None
    known_names = sorted({*STABILITY_STYLES, *styles})
    raise RequestError(
        "style_preset", f"unknown style `{name}`; use one of: {', '.join(known_names)}"
    )


# -- sizes and strengths ------------------------------------------------------------------


def max_pixels(model: ModelSpec) -> int:
    return MAX_PIXELS_FACTOR * model.width * model.height


def size_for(
    width: int | None, height: int | None, model: ModelSpec, guide: InputImage | None
) -> tuple[int, int] | None:
    """The image size the request sets: an input image's own (fitted to the model when it
    is not a usable size), else the request's width and height (up to MAX_PIXELS_FACTOR
    times the model's pixels). None when it sets none: the core's rule then (the
    member's default aspect, else square, at the model's area)."""
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
        return None
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


# -- the options --------------------------------------------------------------------------


def options_for(
    request: GenerationOptions,
    prompts: Sequence[TextPrompt],
    model_name: str,
    models: Mapping[str, ModelSpec],
    styles: Mapping[str, Style],
    *,
    inputs: Inputs = NO_INPUTS,
    size: tuple[int | None, int | None] = (None, None),
    strength: float | None = None,
    stop: int = 100,
) -> Options:
    """The options a Stability request gives, or RequestError naming the field. The core
    builds the job from them as from a slash command's (bot.jobs.spec.build_specs, the
    prompt read as plain text): the member's own defaults fill what the request leaves
    out, then the model's; the mode follows the inputs (an inpainting repaints from
    scratch, as Stability's: `strength` is for image-to-image)."""
    prompt, negative, blend = split_prompts(prompts)
    width, height = size_for(*size, models[model_name], inputs.image) or (None, None)
    return Options(
        prompt=prompt,
        negative_prompt=negative or None,
        model=model_name,
        count=request.samples,
        seed=request.seed or None,  # 0: a random one
        steps=request.steps,
        cfg=request.cfg_scale,
        sampler=SAMPLERS[request.sampler] if request.sampler else None,
        style=style_named(request.style_preset, styles),
        tile=(request.style_preset or "").casefold() == TILE_PRESET or None,
        strength=strength if inputs.mask is None else None,
        stop=stop,
        width=width,
        height=height,
        blend=blend,
        loras=tuple(LoraChoice(name=lora.name, weight=lora.weight) for lora in request.loras),
        draft=request.draft or None,
    )


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
