"""Runs one `GenerateRequest` on a loaded model and writes its images as PNG files.

What every mode shares lives here: a fresh scheduler per job, one CPU
generator per image (seed + i, so image i of a batch is identical to a single
run with that seed), step progress against `pipe.num_timesteps`, cancelling
from the step callback, and PNG files that carry their own recipe. A mode only
picks its pipeline and call arguments (`_RUNNERS`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import diffusers
import torch
import transformers
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from PIL import Image, PngImagePlugin

from engine.errors import BadRequest
from engine.models import LoadedModel, ModelRegistry
from engine.protocol import MAX_SEED, GenerateRequest, JobResult, Mode, OutputImage
from engine.samplers import find_sampler

# Called after each denoising step with (step, total); raising from it stops the
# pipeline before the VAE decode, which is how a job is cancelled.
StepCallback = Callable[[int, int], None]

PipelineCallback = Callable[[DiffusionPipeline, int, Any, dict[str, Any]], dict[str, Any]]
Runner = Callable[
    [LoadedModel, GenerateRequest, SchedulerMixin, list[torch.Generator], PipelineCallback],
    list[Image.Image],
]

# A job id names files on disk, so it may not carry path separators or dots first.
_SAFE_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def image_seeds(request: GenerateRequest) -> list[int]:
    """Seed of each image; wraps so a recorded seed is always a valid request seed."""
    return [(request.seed + index) % (MAX_SEED + 1) for index in range(request.count)]


def generate(request: GenerateRequest, registry: ModelRegistry, on_step: StepCallback) -> JobResult:
    if not _SAFE_JOB_ID.fullmatch(request.job_id):
        raise BadRequest("a job id may hold only letters, digits, '_', '-' and '.' (not first)")
    sampler = find_sampler(request.sampler)
    model = registry.get(request.model)
    seeds = image_seeds(request)
    scheduler = sampler.build(model.scheduler_config, seeds)
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]

    def step_end(
        pipeline: DiffusionPipeline, index: int, timestep: Any, tensors: dict[str, Any]
    ) -> dict[str, Any]:
        on_step(index + 1, pipeline.num_timesteps)
        return tensors

    started = _clock(registry.device)
    images = _RUNNERS[request.mode](model, request, scheduler, generators, step_end)
    gpu_seconds = _clock(registry.device) - started

    output_dir = Path(request.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    outputs = [
        write_png(
            image,
            output_dir / f"{request.job_id}-{index}.png",
            parameters=a1111_parameters(request, sampler.name, seed),
            recipe=recipe(request, sampler.name, seed, index),
            seed=seed,
        )
        for index, (image, seed) in enumerate(zip(images, seeds, strict=True))
    ]
    return JobResult(
        job_id=request.job_id, images=outputs, gpu_seconds=gpu_seconds, sampler=sampler.name
    )


def _txt2img(
    model: LoadedModel,
    request: GenerateRequest,
    scheduler: SchedulerMixin,
    generators: list[torch.Generator],
    callback: PipelineCallback,
) -> list[Image.Image]:
    model.pipeline.scheduler = scheduler
    # Each diffusers pipeline class declares its own __call__; the base class has none.
    pipeline = cast(Callable[..., Any], model.pipeline)
    output = pipeline(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt or None,
        width=request.width,
        height=request.height,
        num_inference_steps=request.steps,
        guidance_scale=request.cfg,
        num_images_per_prompt=request.count,
        generator=generators,
        callback_on_step_end=callback,
    )
    images: list[Image.Image] = output.images
    return images


_RUNNERS: dict[Mode, Runner] = {Mode.TXT2IMG: _txt2img}


def _clock(device: torch.device) -> float:
    # CUDA runs asynchronously: without a sync the clock stops before the GPU does.
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def a1111_parameters(request: GenerateRequest, sampler: str, seed: int) -> str:
    """The "parameters" text other Stable Diffusion tools read back from a PNG."""
    lines = [request.prompt]
    if request.negative_prompt:
        lines.append(f"Negative prompt: {request.negative_prompt}")
    lines.append(
        f"Steps: {request.steps}, Sampler: {sampler}, CFG scale: {request.cfg:g}, "
        f"Seed: {seed}, Size: {request.width}x{request.height}, Model: {request.model}"
    )
    return "\n".join(lines)


def recipe(request: GenerateRequest, sampler: str, seed: int, index: int) -> dict[str, object]:
    """Everything needed to make this one image again, stored in its "atelier" PNG chunk."""
    return {
        **request.model_dump(mode="json", exclude={"type", "output_dir"}),
        "sampler": sampler,
        "seed": seed,
        "batch_seed": request.seed,
        "index": index,
        "versions": {
            "diffusers": diffusers.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    }


def write_png(
    image: Image.Image, path: Path, *, parameters: str, recipe: dict[str, object], seed: int
) -> OutputImage:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", parameters)
    info.add_text("atelier", json.dumps(recipe, ensure_ascii=False))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    data = buffer.getvalue()
    # Write then rename, so a crash never leaves a half-written file under the final name.
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(data)
    os.replace(partial, path)
    return OutputImage(
        path=str(path),
        seed=seed,
        width=image.width,
        height=image.height,
        sha256=hashlib.sha256(data).hexdigest(),
    )
