"""Style reference (--sref) and blend (/blend): a batch's reference images through the
model family's IP-Adapter.

The adapter (`[models.<m>] ip_adapter`) and its CLIP image encoder (`image_encoder`) are
loaded into the pipeline by diffusers' `load_ip_adapter` just before a batch with
references runs, and taken out however it ends: the UNet's attention processors are put
back as they were (diffusers' own unload would replace fused or classic processors with
plain ones), so the next batch runs the checkpoint untouched. As with LoRAs, the files
are read again per batch (from the operating system's cache after the first time).

A style reference steers only the UNet's style block (InstantStyle, Wang et al. 2024):
the first up block with cross-attention, which carries style and not layout; for SDXL
only its middle attention, as InstantStyle sets it, for SD 1.x the whole block. A blend
steers every block, so the images' content comes through too.
"""

# diffusers leaves many public functions unannotated; their results are typed here.
# mypy: untyped-calls-exclude=diffusers

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from PIL import Image
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

from engine.checkpoints import Family
from engine.errors import BadRequest, JobFailure
from engine.protocol import ModelSpec, ReferenceMode, SharedParams

log = logging.getLogger(__name__)

# IP-Adapter scales by block, in the form set_ip_adapter_scale takes.
Scales = float | dict[str, dict[str, float | list[float]]]


@dataclass(frozen=True)
class Weights:
    """Where `load_ip_adapter` finds an adapter: a folder (or repo id), the subfolder and
    the file name in it."""

    location: str
    subfolder: str
    weight_name: str

    @classmethod
    def of(cls, source: str) -> Weights:
        """A local .safetensors/.bin file, or `<owner>/<repo>/<path in the repo>`."""
        path = Path(source).expanduser()
        if path.is_file():
            return cls(str(path.parent), "", path.name)
        parts = source.split("/")
        if len(parts) < 3 or path.is_absolute() or source.startswith("."):
            raise JobFailure(f"IP-Adapter weights not found: {source}")
        return cls("/".join(parts[:2]), "/".join(parts[2:-1]), parts[-1])


@dataclass(frozen=True)
class References:
    """A batch's reference images and how they steer it."""

    images: tuple[str, ...]
    mode: ReferenceMode
    scale: float
    weights: Weights
    encoder: str


def references_for(params: SharedParams, model: ModelSpec) -> References | None:
    """The batch's references (None without any); BadRequest when its model has no
    IP-Adapter configured."""
    if not params.references:
        return None
    if model.ip_adapter is None or model.image_encoder is None:
        raise BadRequest(
            f"model {params.model!r} takes no reference images: set ip_adapter and"
            f" image_encoder in [models.{params.model}]"
        )
    return References(
        params.references,
        params.reference_mode,
        params.reference_scale,
        Weights.of(model.ip_adapter),
        model.image_encoder,
    )


def style_scales(unet: Any, family: Family, scale: float) -> Scales:
    """InstantStyle's per-block scales: `scale` on the style block, 0 elsewhere."""
    for number, block in enumerate(unet.up_blocks):
        attentions = len(getattr(block, "attentions", ()))
        if attentions:
            if family is Family.SDXL:
                middle = [0.0] * attentions
                middle[attentions // 2] = scale
                return {"up": {f"block_{number}": middle}}
            return {"up": {f"block_{number}": scale}}
    raise BadRequest("this model's UNet has no cross-attention to steer with a reference")


def _encoder(location: str, pipeline: DiffusionPipeline) -> CLIPVisionModelWithProjection:
    path = Path(location).expanduser()
    if path.is_dir():
        found, subfolder = str(path), ""
    else:
        parts = location.split("/")
        found, subfolder = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        encoder = CLIPVisionModelWithProjection.from_pretrained(found, subfolder=subfolder)
    except OSError as error:
        raise JobFailure(f"the IP-Adapter's image encoder could not be loaded: {error}") from error
    # transformers types `to` for its own call forms only.
    moved: CLIPVisionModelWithProjection = cast(Any, encoder).to(
        pipeline.device, dtype=pipeline.unet.dtype
    )
    return moved


def _images(references: References) -> list[Image.Image]:
    try:
        return [Image.open(path).convert("RGB") for path in references.images]
    except OSError as error:
        raise BadRequest(f"a reference image could not be read ({error})") from error


@contextmanager
def applied(
    pipeline: DiffusionPipeline, family: Family, references: References | None
) -> Iterator[dict[str, Any]]:
    """While the batch runs, the IP-Adapter loaded at the references' scales; yields the
    pipeline call's arguments (the images, all for the one adapter: their tokens are
    concatenated, so several images blend). Unloaded after, however the batch ends."""
    if references is None:
        yield {}
        return
    images = _images(references)
    # The IP-Adapter mixin's methods are on the family's pipeline classes.
    loader = cast(Any, pipeline)
    processors = dict(pipeline.unet.attn_processors)
    extractor = getattr(pipeline, "feature_extractor", None)
    try:
        encoder = _encoder(references.encoder, pipeline)
        size = encoder.config.image_size
        loader.register_modules(
            image_encoder=encoder,
            feature_extractor=CLIPImageProcessor(size=size, crop_size=size),
        )
        weights = references.weights
        log.info("loading IP-Adapter %s/%s", weights.location, weights.weight_name)
        try:
            loader.load_ip_adapter(
                weights.location,
                subfolder=weights.subfolder,
                weight_name=weights.weight_name,
                image_encoder_folder=None,
            )
        except (OSError, ValueError, KeyError) as error:
            raise JobFailure(
                f"the IP-Adapter could not be loaded ({type(error).__name__}: {error});"
                " check it was made for this model's family"
            ) from error
        scale = references.scale
        loader.set_ip_adapter_scale(
            style_scales(pipeline.unet, family, scale)
            if references.mode is ReferenceMode.STYLE
            else scale
        )
        yield {"ip_adapter_image": [images]}
    finally:
        if getattr(pipeline.unet, "encoder_hid_proj", None) is not None:
            loader.unload_ip_adapter()
        pipeline.unet.set_attn_processor(processors)
        loader.register_modules(image_encoder=None, feature_extractor=extractor)
