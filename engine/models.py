"""The configured models by name, loaded on first use and kept resident under a memory budget.

A resident model is one set of weights per checkpoint: its text-to-image
pipeline plus what its config adds (ControlNets, an inpainting UNet, a VAE, a
preview decoder). The other modes' pipelines are built from it with
diffusers' `from_pipe`, which shares those modules rather than copying them.
Models beyond the budget are evicted least recently used first.
"""

# diffusers leaves many public functions unannotated; their results are typed here.
# mypy: untyped-calls-exclude=diffusers

from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.models.autoencoders.autoencoder_tiny import AutoencoderTiny
from diffusers.models.controlnets.controlnet import ControlNetModel
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.pipelines.auto_pipeline import (
    AutoPipelineForImage2Image,
    AutoPipelineForInpainting,
    AutoPipelineForText2Image,
)
from diffusers.pipelines.pipeline_utils import DiffusionPipeline

from engine import checkpoints, speed
from engine.checkpoints import Family, Source
from engine.errors import BadRequest, JobFailure, UnknownModel
from engine.memory import module_bytes
from engine.protocol import ControlType, EngineSpeed, LoraSpec, Mode, ModelSpec

log = logging.getLogger(__name__)

_IMAGE_TO_IMAGE_MODES = (Mode.IMG2IMG, Mode.VARIATION, Mode.UPSCALE)


@dataclass
class LoadedModel:
    name: str
    family: Family
    pipeline: DiffusionPipeline  # text-to-image; the others are built from it
    # The model's own scheduler settings: jobs replace the pipelines' scheduler,
    # so each job's sampler starts from these rather than from the last job's.
    scheduler_config: Mapping[str, Any]
    dtype: torch.dtype
    checkpoint_sha256: str
    controlnets: dict[ControlType, ControlNetModel] = field(default_factory=dict)
    inpaint_unet: UNet2DConditionModel | None = None
    preview_decoder: AutoencoderTiny | None = None
    _derived: dict[str, DiffusionPipeline] = field(default_factory=dict, repr=False)

    @property
    def memory_bytes(self) -> int:
        modules: list[torch.nn.Module] = [
            module
            for module in self.pipeline.components.values()
            if isinstance(module, torch.nn.Module)
        ]
        modules += self.controlnets.values()
        modules += [m for m in (self.inpaint_unet, self.preview_decoder) if m is not None]
        return module_bytes(modules)

    def pipeline_for(self, mode: Mode, control_type: ControlType) -> DiffusionPipeline:
        """The pipeline for `mode`, sharing this model's modules; BadRequest if not configured."""
        if mode is Mode.TXT2IMG:
            return self.pipeline
        if mode is Mode.CONTROLNET:
            controlnet = self.controlnets.get(control_type)
            if controlnet is None:
                configured = ", ".join(self.controlnets) or "none"
                raise BadRequest(
                    f"model {self.name!r} has no ControlNet for control type '{control_type}'"
                    f" (configured: {configured}); add [models.{self.name}.controlnets]"
                    f" {control_type} = ... to the config or pick another control type"
                )
            return self._derive(
                f"controlnet-{control_type}", AutoPipelineForText2Image, controlnet=controlnet
            )
        if mode in (Mode.INPAINT, Mode.OUTPAINT):
            # Outpainting is inpainting with a mask the engine draws (engine.inputs.Canvas).
            extra = {} if self.inpaint_unet is None else {"unet": self.inpaint_unet}
            return self._derive("inpaint", AutoPipelineForInpainting, **extra)
        assert mode in _IMAGE_TO_IMAGE_MODES, mode
        return self._derive("img2img", AutoPipelineForImage2Image)

    def _derive(self, key: str, auto_class: Any, **modules: torch.nn.Module) -> DiffusionPipeline:
        if key not in self._derived:
            # The auto classes' from_pipe builds the family's pipeline for that task from
            # the same module objects (no copy, no cast); `modules` add or replace some.
            pipeline: DiffusionPipeline = auto_class.from_pipe(self.pipeline, **modules)
            pipeline.set_progress_bar_config(disable=True)
            self._derived[key] = pipeline
        return self._derived[key]


class ModelRegistry:
    """Looks models up by name and keeps the recently used ones within `memory_budget` bytes.

    `memory_budget` None keeps one model at a time. A model larger than the
    whole budget is still loaded, alone. `speed_options` (engine.speed) say how
    every model runs; a dtype or compile setting the device cannot run is refused here
    (BadRequest), before anything loads. `loras` are the configured LoRAs by name,
    loaded per batch (engine.loras).
    """

    def __init__(
        self,
        specs: Mapping[str, ModelSpec],
        device: torch.device,
        memory_budget: int | None = None,
        speed_options: EngineSpeed | None = None,
        compile_backend: speed.CompileBackend = "inductor",
        loras: Mapping[str, LoraSpec] | None = None,
    ) -> None:
        self._specs = dict(specs)
        self.loras: Mapping[str, LoraSpec] = dict(loras or {})
        self.device = device
        self.speed = speed_options or EngineSpeed()
        self.dtype = speed.torch_dtype(self.speed.dtype, device)
        speed.check_compile(self.speed, device, compile_backend)
        self._compile_backend = compile_backend
        self.memory_budget = memory_budget
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._sizes: dict[str, int] = {}
        # Guards `_loaded` against the status reader, which runs on another thread.
        self._lock = threading.Lock()
        self._hashes: dict[tuple[str, int, float], str] = {}

    @property
    def names(self) -> list[str]:
        return list(self._specs)

    @property
    def resident(self) -> list[str]:
        """Names of the models in memory, least recently used first."""
        with self._lock:
            return list(self._loaded)

    def resident_models(self) -> list[tuple[str, Family, int]]:
        """(name, family, memory bytes) of each model in memory, least recently used first."""
        with self._lock:
            return [(m.name, m.family, self._sizes[m.name]) for m in self._loaded.values()]

    def spec(self, name: str) -> ModelSpec:
        try:
            return self._specs[name]
        except KeyError:
            known = ", ".join(self._specs) or "none"
            raise UnknownModel(f"unknown model {name!r}; configured models: {known}") from None

    def get(self, name: str) -> LoadedModel:
        """The model called `name`, loading it (and unloading the least recent) if needed."""
        spec = self.spec(name)
        with self._lock:
            if name in self._loaded:
                self._loaded.move_to_end(name)
                return self._loaded[name]
        try:
            sources = _sources(spec)
            # Make room before loading, judged by the files' size, so the
            # old and new weights are never all resident at once.
            self._evict_for(sum(source.size_on_disk() for source in sources.values()))
            log.info("loading model %s from %s on %s", name, spec.source, self.device)
            model = self._load(name, spec, sources)
        except (OSError, ValueError) as error:
            raise JobFailure(f"model {name!r} could not be loaded: {error}") from error
        size = model.memory_bytes
        with self._lock:
            self._loaded[name] = model
            self._sizes[name] = size
        self._evict_for(0, keep=name)
        return model

    def _evict_for(self, incoming: int, keep: str | None = None) -> None:
        """Unload least recently used models, except `keep`, until `incoming` more bytes fit."""
        while True:
            with self._lock:
                others = [name for name in self._loaded if name != keep]
                resident = sum(self._sizes.values())
                budget = self.memory_budget
                if not others or (budget is not None and resident + incoming <= budget):
                    return
                evicted = others[0]
                del self._loaded[evicted], self._sizes[evicted]
            log.info("unloading model %s", evicted)
            self.free_memory()

    def _load(self, name: str, spec: ModelSpec, sources: dict[str, Source]) -> LoadedModel:
        components: dict[str, Any] = {}
        if "vae" in sources:
            components["vae"] = checkpoints.load_vae(sources["vae"], self.dtype)
        pipeline = checkpoints.load_text2image(sources["checkpoint"], self.dtype, components)
        pipeline.set_progress_bar_config(disable=True)
        family = checkpoints.family_of_pipeline(pipeline)
        if family is Family.SDXL and "vae" not in sources and self.speed.sdxl_vae is not None:
            # SDXL's own VAE overflows in fp16 (diffusers then decodes in fp32, slowly);
            # an fp16-safe one (e.g. madebyollin/sdxl-vae-fp16-fix) does not.
            vae = checkpoints.load_vae(Source(self.speed.sdxl_vae), self.dtype)
            pipeline.register_modules(vae=vae)
        model = LoadedModel(
            name=name,
            family=family,
            pipeline=pipeline,
            scheduler_config=pipeline.scheduler.config,
            dtype=self.dtype,
            checkpoint_sha256=self._fingerprint(sources["checkpoint"]),
        )
        for control_type in spec.controlnets:
            source = sources[f"controlnet:{control_type}"]
            model.controlnets[control_type] = checkpoints.load_controlnet(source, self.dtype)
        if "inpaint" in sources:
            model.inpaint_unet = checkpoints.load_inpaint_unet(
                sources["inpaint"], family, self.dtype
            )
        if "preview_decoder" in sources:
            model.preview_decoder = checkpoints.load_preview_decoder(
                sources["preview_decoder"], self.dtype
            )
        pipeline.to(self.device)
        extras: list[torch.nn.Module | None] = [
            *model.controlnets.values(),
            model.inpaint_unet,
            model.preview_decoder,
        ]
        for module in extras:
            if module is not None:
                module.to(self.device)
        speed.apply(pipeline, [*model.controlnets.values(), model.inpaint_unet], self.speed)
        if self.speed.compile:
            speed.compile_modules(pipeline, self.speed, self._compile_backend)
        return model

    def warm_up(self) -> None:
        """With compile on: load `speed.warmup_model` and run it at each warm-up batch
        size, so the compiling happens now rather than in a member's first job."""
        name = self.speed.warmup_model
        if not self.speed.compile or name is None:
            return
        model = self.get(name)
        log.info(
            "compiling model %s for batches of %s image(s)",
            name,
            ", ".join(map(str, self.speed.warmup_batch_images)),
        )
        speed.warm_up(
            model.pipeline, model.scheduler_config, self.spec(name), self.speed.warmup_batch_images
        )

    def _fingerprint(self, source: Source) -> str:
        # Hashing gigabytes takes seconds: remember it across evictions while
        # the files are unchanged.
        stats = [path.stat() for path in source.weight_files()]
        key = (
            source.location,
            sum(stat.st_size for stat in stats),
            max((stat.st_mtime for stat in stats), default=0.0),
        )
        if key not in self._hashes:
            self._hashes[key] = checkpoints.fingerprint(source)
        return self._hashes[key]

    def free_memory(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _sources(spec: ModelSpec) -> dict[str, Source]:
    """Every set of weights a model spec names, by role; raises if one is missing."""
    sources = {"checkpoint": Source(spec.source)}
    sources |= {
        f"controlnet:{control_type}": Source(source)
        for control_type, source in spec.controlnets.items()
    }
    for role in ("inpaint", "vae", "preview_decoder"):
        value = getattr(spec, role)
        if value is not None:
            sources[role] = Source(value)
    return sources
