"""The engine's speed options (`[engine]` dtype, attention, channels_last, fuse_qkv, sdxl_vae,
compile), applied once to a model's modules where it is loaded, and the compile warm-up.

They follow the diffusers optimisation guides for serving ("Accelerate inference of
text-to-image diffusion models", "torch.compile"): half precision, PyTorch's fused
attention (SDPA), channels-last convolutions, one matmul for each attention's q, k
and v, and `torch.compile` of the UNet and the VAE decoder. None of them changes
what a job asks for; fused projections and compiled kernels may change the last bits
of a pixel, the same way on every run.

Compiling is checked here, before anything loads: a device or install that cannot
compile is refused with a message that says what to change. A compiled module is
traced again only when the shapes it sees change (batch size, image size), never
for a new seed, prompt or sampler, so the warm-up (`warm_up`) runs the shapes
members will use before the engine says it is ready.
"""

# diffusers leaves many public functions unannotated; their results are typed here.
# mypy: untyped-calls-exclude=diffusers

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from diffusers.pipelines.pipeline_utils import DiffusionPipeline

from engine.errors import BadRequest
from engine.protocol import EngineSpeed, ModelSpec
from engine.samplers import Sampler, find_sampler

log = logging.getLogger(__name__)

# `torch.compile`'s backend: "inductor" in production; tests pass a cheap one.
CompileBackend = str | Callable[..., Any]

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
# A warm-up job's steps: enough for every compiled call to run, and, with CUDA
# graphs (compile_mode "reduce-overhead" / "max-autotune"), to be recorded.
WARMUP_STEPS = 3
# Traced variants of one compiled module kept at once (torch's default is 8); past
# it torch would run the module uncompiled, so allow every batch and image size.
COMPILE_CACHE_SIZE = 64


def torch_dtype(choice: str, device: torch.device) -> torch.dtype:
    """The dtype `[engine] dtype` names on `device`; BadRequest where it cannot run."""
    if choice == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if choice == "fp16" and device.type == "cpu":
        raise BadRequest(
            '[engine] dtype = "fp16" needs a GPU: PyTorch\'s CPU kernels run half precision'
            ' slowly or not at all; on cpu use "fp32" (or "auto", or "bf16")'
        )
    if choice == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise BadRequest(
            f'[engine] dtype = "bf16" needs a GPU with bfloat16 (Ampere or newer);'
            f' {torch.cuda.get_device_name(device)} has none: use "fp16"'
        )
    return _DTYPES[choice]


def compile_unavailable(device: torch.device) -> str | None:
    """Why `torch.compile` cannot build kernels for `device` here; None when it can."""
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            return (
                "torch.compile on a CUDA GPU needs Triton, which this PyTorch install lacks"
                " (install the CUDA build of torch from pytorch.org, which brings it)"
            )
        return None
    if device.type == "cpu":
        compiler = os.environ.get("CXX") or ("clang++" if sys.platform == "darwin" else "g++")
        if shutil.which(compiler) is None:
            return (
                f"torch.compile on the CPU needs a C++ compiler, and {compiler!r} is not on"
                " the PATH (install one, or set CXX)"
            )
        return None
    return f"torch.compile is supported on cuda and cpu devices, not {device.type}"


def check_compile(options: EngineSpeed, device: torch.device, backend: CompileBackend) -> None:
    """Refuse `compile = true` where it cannot work, before any model loads."""
    if not options.compile or backend != "inductor":
        return
    reason = compile_unavailable(device)
    if reason is not None:
        raise BadRequest(f"[engine] compile = true: {reason}; or set compile = false")


def apply(
    pipeline: DiffusionPipeline, extras: Sequence[torch.nn.Module | None], options: EngineSpeed
) -> None:
    """Attention, memory format and fused projections for a model's modules, in place.

    `extras` are the model's other networks (ControlNets, an inpainting UNet); the
    modes' pipelines share these module objects, so they all run the same way.
    """
    networks = [pipeline.unet, *(module for module in extras if module is not None)]
    processor = AttnProcessor2_0 if options.attention == "sdpa" else AttnProcessor
    # Set explicitly: a checkpoint or loader that installed another processor would
    # otherwise slow every job. Fusing below replaces these with fused ones.
    for module in (*networks, pipeline.vae):
        module.set_attn_processor(processor())
    if options.channels_last:
        for module in (*networks, pipeline.vae):
            module.to(memory_format=torch.channels_last)
    if options.fuse_qkv:
        for module in (*networks, pipeline.vae):
            fuse = getattr(module, "fuse_qkv_projections", None)
            if fuse is not None:
                fuse()


def compile_modules(
    pipeline: DiffusionPipeline, options: EngineSpeed, backend: CompileBackend = "inductor"
) -> None:
    """Compile the UNet and the VAE decoder in place (the module objects stay the same,
    so every mode's pipeline shares the compiled code). Tracing happens on first use."""
    dynamo = cast(Any, torch)._dynamo
    dynamo.config.cache_size_limit = max(dynamo.config.cache_size_limit, COMPILE_CACHE_SIZE)
    mode: str | None = options.compile_mode
    if backend == "inductor":
        if pipeline.device.type == "cuda":
            # The settings the diffusers guide uses for SD and SDXL on recent GPUs.
            inductor = cast(Any, torch)._inductor.config
            inductor.conv_1x1_as_mm = True
            inductor.coordinate_descent_tuning = True
            inductor.epilogue_fusion = False
            inductor.coordinate_descent_check_all_directions = True
    else:
        mode = None  # modes are inductor's
    for module in (pipeline.unet, pipeline.vae.decoder):
        module.compile(fullgraph=True, mode=mode, backend=backend)


def _float_timesteps(sampler: Sampler, scheduler_config: Mapping[str, Any]) -> bool:
    scheduler: Any = sampler.build(scheduler_config, [0])
    scheduler.set_timesteps(WARMUP_STEPS)
    return bool(scheduler.timesteps.is_floating_point())


def warm_up(
    pipeline: DiffusionPipeline,
    scheduler_config: Mapping[str, Any],
    spec: ModelSpec,
    batch_images: Sequence[int],
) -> None:
    """Run the model's default job (size, cfg, sampler) once per batch size, so the
    compiled modules are traced for them before a member's job needs them.

    Samplers hand the UNet integer timesteps (DDIM, DPM++ 2M, UniPC, ...) or float
    ones (Euler, Heun, LMS, ...), and a compiled module is traced once for each
    dtype, so one more image runs with a sampler of the other kind.
    """
    default = find_sampler(spec.sampler)
    other = find_sampler("DDIM" if _float_timesteps(default, scheduler_config) else "Euler")
    runs = [(default, images) for images in batch_images] + [(other, 1)]
    call = cast(Callable[..., Any], pipeline)
    for sampler, images in runs:
        seeds = list(range(images))
        pipeline.scheduler = sampler.build(scheduler_config, seeds)
        call(
            prompt="warm-up",
            num_inference_steps=WARMUP_STEPS,
            guidance_scale=spec.cfg,
            width=spec.width,
            height=spec.height,
            num_images_per_prompt=images,
            generator=[torch.Generator("cpu").manual_seed(seed) for seed in seeds],
        )
