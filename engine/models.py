"""The configured models by name, loaded on first use and kept resident a few at a time.

A model's `source` is a local diffusers folder, a single-file checkpoint
(.safetensors or .ckpt) or a Hugging Face repo id (downloaded on the user's
machine; tests only use local folders).
"""

# diffusers leaves many public functions unannotated; their results are typed here.
# mypy: untyped-calls-exclude=diffusers

from __future__ import annotations

import gc
import logging
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers.models.attention_processor import AttnProcessor2_0
from diffusers.pipelines.auto_pipeline import AutoPipelineForText2Image
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
    StableDiffusionPipeline,
)

from engine.errors import JobFailure, UnknownModel
from engine.protocol import ModelSpec

log = logging.getLogger(__name__)

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")


def dtype_for(device: torch.device) -> torch.dtype:
    """Half precision where it is fast and safe (CUDA), full precision elsewhere."""
    return torch.float16 if device.type == "cuda" else torch.float32


@dataclass(frozen=True)
class LoadedModel:
    name: str
    pipeline: DiffusionPipeline
    # The model's own scheduler settings: jobs replace `pipeline.scheduler`, so
    # each job's sampler starts from these rather than from the last job's.
    scheduler_config: Mapping[str, Any]
    dtype: torch.dtype


class ModelRegistry:
    """Looks models up by name; keeps at most `max_loaded` of them in memory (LRU)."""

    def __init__(
        self, specs: Mapping[str, ModelSpec], device: torch.device, max_loaded: int = 1
    ) -> None:
        self._specs = dict(specs)
        self.device = device
        self.dtype = dtype_for(device)
        self._max_loaded = max_loaded
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()

    @property
    def names(self) -> list[str]:
        return list(self._specs)

    @property
    def resident(self) -> list[str]:
        """Names of the models in memory, least recently used first."""
        return list(self._loaded)

    def spec(self, name: str) -> ModelSpec:
        try:
            return self._specs[name]
        except KeyError:
            known = ", ".join(self._specs) or "none"
            raise UnknownModel(f"unknown model {name!r}; configured models: {known}") from None

    def get(self, name: str) -> LoadedModel:
        """The model called `name`, loading it (and unloading the least recent) if needed."""
        spec = self.spec(name)
        if name in self._loaded:
            self._loaded.move_to_end(name)
            return self._loaded[name]
        while len(self._loaded) >= self._max_loaded:
            evicted, _ = self._loaded.popitem(last=False)
            log.info("unloading model %s", evicted)
            self._free_memory()
        log.info("loading model %s from %s on %s", name, spec.source, self.device)
        try:
            pipeline = load_text2image(spec.source, self.dtype)
        except (OSError, ValueError) as error:
            raise JobFailure(f"model {name!r} could not be loaded: {error}") from error
        pipeline.to(self.device)
        pipeline.set_progress_bar_config(disable=True)
        _use_sdpa(pipeline)
        model = LoadedModel(name, pipeline, pipeline.scheduler.config, self.dtype)
        self._loaded[name] = model
        return model

    def _free_memory(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def load_text2image(source: str, dtype: torch.dtype) -> DiffusionPipeline:
    path = Path(source).expanduser()
    pipeline: DiffusionPipeline
    if path.is_dir():
        # The auto class reads model_index.json and picks the family's pipeline (SD, SDXL, ...).
        pipeline = AutoPipelineForText2Image.from_pretrained(str(path), dtype=dtype)
    elif path.suffix.lower() in SINGLE_FILE_SUFFIXES:
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        pipeline = StableDiffusionPipeline.from_single_file(str(path), dtype=dtype)
    elif _REPO_ID.fullmatch(source):
        pipeline = AutoPipelineForText2Image.from_pretrained(source, dtype=dtype)
    else:
        raise FileNotFoundError(
            f"{source!r} is not a folder, a {'/'.join(SINGLE_FILE_SUFFIXES)} file"
            " or a Hugging Face repo id"
        )
    return pipeline


def _use_sdpa(pipeline: DiffusionPipeline) -> None:
    # PyTorch's fused attention is diffusers' default on torch 2; set it explicitly so
    # a checkpoint or loader that installed another processor cannot slow every job.
    for name in ("unet", "vae"):
        module = getattr(pipeline, name, None)
        if module is not None:
            module.set_attn_processor(AttnProcessor2_0())
