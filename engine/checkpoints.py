"""Reading checkpoints from disk: their family, their fingerprint, and their parts.

A `source` is a local diffusers folder, a single-file checkpoint (.safetensors
or .ckpt) or a Hugging Face repo id (downloaded on the user's machine; tests
only use local folders). The family is read from the checkpoint itself: the
pipeline class in a folder's model_index.json, or the tensor names of a file.
"""

# diffusers leaves many public functions unannotated; their results are typed here.
# mypy: untyped-calls-exclude=diffusers

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, cast

import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.autoencoders.autoencoder_tiny import AutoencoderTiny
from diffusers.models.controlnets.controlnet import ControlNetModel
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.pipelines.auto_pipeline import AutoPipelineForText2Image
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
    StableDiffusionPipeline,
)
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_inpaint import (
    StableDiffusionInpaintPipeline,
)
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import (
    StableDiffusionXLPipeline,
)
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_inpaint import (
    StableDiffusionXLInpaintPipeline,
)
from safetensors import safe_open

from engine.protocol import Family as Family

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")
_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")
# Only SDXL checkpoints carry a second text encoder (OpenCLIP bigG) as embedder 1.
_SDXL_SINGLE_FILE_KEY = "conditioner.embedders.1."
_HASH_CHUNK = 1 << 20


class Source:
    """Where one set of weights lives: a folder, a single file, or a hub repo id."""

    def __init__(self, source: str) -> None:
        self.text = source
        self.path = Path(source).expanduser()
        if self.path.is_dir():
            self.kind = "folder"
        elif self.path.suffix.lower() in SINGLE_FILE_SUFFIXES:
            if not self.path.is_file():
                raise FileNotFoundError(f"no such file: {self.path}")
            self.kind = "file"
        elif _REPO_ID.fullmatch(source):
            self.kind = "repo"
        else:
            raise FileNotFoundError(
                f"{source!r} is not a folder, a {'/'.join(SINGLE_FILE_SUFFIXES)} file"
                " or a Hugging Face repo id"
            )

    @property
    def location(self) -> str:
        return self.text if self.kind == "repo" else str(self.path)

    def weight_files(self) -> list[Path]:
        """The files holding weights, in a stable order (empty for a repo not yet cached)."""
        if self.kind == "file":
            return [self.path]
        if self.kind == "folder":
            return sorted(
                path
                for path in self.path.rglob("*")
                if path.is_file() and path.suffix.lower() in WEIGHT_SUFFIXES
            )
        return []

    def size_on_disk(self) -> int:
        return sum(path.stat().st_size for path in self.weight_files())

    def has_subfolder(self, name: str) -> bool:
        return self.kind == "folder" and (self.path / name / "config.json").is_file()


def family_of_pipeline(pipeline: DiffusionPipeline) -> Family:
    return Family.SDXL if isinstance(pipeline, StableDiffusionXLPipeline) else Family.SD


def single_file_is_sdxl(path: Path) -> bool:
    """Whether a single-file checkpoint is SDXL, from its tensor names alone."""
    if path.suffix.lower() == ".safetensors":
        with safe_open(str(path), framework="pt") as weights:
            keys: list[str] = list(weights.keys())
    else:
        checkpoint = torch.load(path, map_location="meta", weights_only=True)
        keys = list(checkpoint.get("state_dict", checkpoint))
    return any(key.startswith(_SDXL_SINGLE_FILE_KEY) for key in keys)


def fingerprint(source: Source) -> str:
    """sha256 of the checkpoint's weight files (names and bytes), or the repo id for a repo."""
    if source.kind == "repo":
        return f"repo:{source.text}"
    digest = hashlib.sha256()
    for path in source.weight_files():
        if source.kind == "folder":
            digest.update(path.relative_to(source.path).as_posix().encode() + b"\0")
        with path.open("rb") as file:
            while chunk := file.read(_HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def load_text2image(
    source: Source, dtype: torch.dtype, components: dict[str, Any]
) -> DiffusionPipeline:
    """The checkpoint's text-to-image pipeline; `components` replace its own (a VAE)."""
    pipeline: DiffusionPipeline
    if source.kind == "file":
        cls = (
            StableDiffusionXLPipeline
            if single_file_is_sdxl(source.path)
            else StableDiffusionPipeline
        )
        pipeline = cls.from_single_file(source.location, dtype=dtype, **components)
    else:
        # The auto class reads model_index.json and picks the family's pipeline.
        pipeline = AutoPipelineForText2Image.from_pretrained(
            source.location, dtype=dtype, **_no_safety_checker(source), **components
        )
    if getattr(pipeline, "safety_checker", None) is not None:  # never silently used
        pipeline.register_modules(safety_checker=None)
    return pipeline


def _no_safety_checker(source: Source) -> dict[str, Any]:
    """Arguments that keep diffusers' safety checker out of an SD 1.x checkpoint that ships
    one: it would blacken flagged images silently, and engine.safety's classifier checks
    every image instead (and says so). Not even loaded: it is 1.2 GB of weights."""
    # Typed as a tuple for the return_unused_kwargs case; a plain call returns the dict.
    config = cast(dict[str, Any], DiffusionPipeline.load_config(source.location))
    if config.get("safety_checker", [None])[0] is None:
        return {}  # none shipped, or an SDXL pipeline, which takes no such argument
    return {"safety_checker": None, "requires_safety_checker": False}


def load_inpaint_unet(source: Source, family: Family, dtype: torch.dtype) -> UNet2DConditionModel:
    """The UNet of a dedicated inpainting checkpoint (9 input channels).

    Only the UNet is kept: the text encoders and VAE are the base checkpoint's.
    """
    unet: UNet2DConditionModel
    if source.kind == "file":
        cls = (
            StableDiffusionXLInpaintPipeline
            if family is Family.SDXL
            else StableDiffusionInpaintPipeline
        )
        unet = cls.from_single_file(source.location, dtype=dtype).unet
    else:
        unet = UNet2DConditionModel.from_pretrained(source.location, subfolder="unet", dtype=dtype)
    return unet


def load_vae(source: Source, dtype: torch.dtype) -> AutoencoderKL:
    vae: AutoencoderKL
    if source.kind == "file":
        vae = AutoencoderKL.from_single_file(source.location, dtype=dtype)
    else:
        # A whole pipeline folder names its VAE's subfolder; a VAE folder is the VAE.
        subfolder = "vae" if source.has_subfolder("vae") else None
        vae = AutoencoderKL.from_pretrained(source.location, subfolder=subfolder, dtype=dtype)
    return vae


def load_controlnet(source: Source, dtype: torch.dtype) -> ControlNetModel:
    controlnet: ControlNetModel
    if source.kind == "file":
        controlnet = ControlNetModel.from_single_file(source.location, dtype=dtype)
    else:
        controlnet = ControlNetModel.from_pretrained(source.location, dtype=dtype)
    return controlnet


def load_preview_decoder(source: Source, dtype: torch.dtype) -> AutoencoderTiny:
    decoder: AutoencoderTiny = AutoencoderTiny.from_pretrained(source.location, dtype=dtype)
    return decoder
