"""Runs one `GenerateRequest` on a loaded model and writes its images as PNG files.

What every mode shares lives here: a fresh scheduler per batch, one CPU
generator per image (seed + i, so image i is the same whether the job runs
as one batch or is split), step progress against `pipe.num_timesteps`,
previews, cancelling from the step callback, splitting a batch that does not
fit in memory, and PNG files that carry their own recipe. A mode only adds
its inputs to the pipeline call (`_mode_arguments`).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import torch
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from PIL import Image

from engine import inputs
from engine.errors import BadRequest, OutOfMemory
from engine.memory import device_memory, images_per_batch
from engine.models import LoadedModel, ModelRegistry
from engine.outputs import a1111_parameters, recipe, write_png
from engine.previews import PreviewWriter
from engine.protocol import MAX_SEED, MAX_STEPS, GenerateRequest, JobResult, Mode
from engine.samplers import Sampler, find_sampler

# Called after each denoising step with (step, total, preview path or None); raising
# from it stops the pipeline before the VAE decode, which is how a job is cancelled.
StepCallback = Callable[[int, int, str | None], None]
# Called with the number of images just before each batch runs (fault injection).
BatchHook = Callable[[int], None]

# A job id names files on disk, so it may not carry path separators or dots first.
_SAFE_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# Above this side the VAE decodes in tiles: a full decode of a large image is the
# single biggest allocation of a job. Upscales always allow tiles.
TILED_DECODE_ABOVE_SIDE = 1024
# The init image in a job's arguments, before it is repeated per image as "image".
_INIT_IMAGE = "init_image"


def image_seeds(request: GenerateRequest) -> list[int]:
    """Seed of each image; wraps so a recorded seed is always a valid request seed."""
    return [(request.seed + index) % (MAX_SEED + 1) for index in range(request.count)]


def generate(
    request: GenerateRequest,
    registry: ModelRegistry,
    on_step: StepCallback,
    before_batch: BatchHook | None = None,
) -> JobResult:
    if not _SAFE_JOB_ID.fullmatch(request.job_id):
        raise BadRequest("a job id may hold only letters, digits, '_', '-' and '.' (not first)")
    sampler = find_sampler(request.sampler)
    model = registry.get(request.model)
    pipeline = model.pipeline_for(request.mode, request.control_type)
    arguments = _mode_arguments(request)
    seeds = image_seeds(request)
    output_dir = Path(request.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    preview = (
        PreviewWriter(
            output_dir / f"{request.job_id}-preview.png", model.family, model.preview_decoder
        )
        if request.preview_every
        else None
    )
    job = _Job(request, model, pipeline, sampler, arguments, seeds, on_step, preview)
    if before_batch is not None:
        job.before_batch = before_batch
    memory = device_memory(registry.device)
    first_size = images_per_batch(
        model.family,
        request.width,
        request.height,
        request.count,
        model.dtype,
        None if memory is None else memory.free,
    )

    started = _clock(registry.device)
    try:
        with _tiled_decode(pipeline, request):
            images = job.run(first_size, registry.free_memory)
    finally:
        if preview is not None:
            preview.remove()
    gpu_seconds = _clock(registry.device) - started

    input_sha256 = {
        name: inputs.file_sha256(path)
        for name in ("init_image", "mask_image", "control_image")
        if (path := getattr(request, name)) is not None
    }
    outputs = [
        write_png(
            image,
            output_dir / f"{request.job_id}-{index}.png",
            parameters=a1111_parameters(request, sampler.name, seed),
            recipe=recipe(
                request,
                sampler=sampler.name,
                scheduler=job.scheduler_recipe,
                checkpoint_sha256=model.checkpoint_sha256,
                input_sha256=input_sha256,
                seed=seed,
                index=index,
            ),
            seed=seed,
        )
        for index, (image, seed) in enumerate(zip(images, seeds, strict=True))
    ]
    return JobResult(
        job_id=request.job_id, images=outputs, gpu_seconds=gpu_seconds, sampler=sampler.name
    )


def _mode_arguments(request: GenerateRequest) -> dict[str, Any]:
    """The pipeline call's mode-specific arguments, inputs read and sized to the job."""
    size = {"width": request.width, "height": request.height}
    mode = request.mode
    if mode is Mode.TXT2IMG:
        return size
    if mode is Mode.CONTROLNET:
        assert request.control_image is not None  # the protocol checks inputs per mode
        control = inputs.control_image(request.control_image, request.control_type, **size)
        return size | {"image": control, "controlnet_conditioning_scale": request.control_scale}
    assert request.init_image is not None
    _check_denoising_steps(request)
    # Upscale: the resize to the (larger) request size is the upscale; the
    # low-strength pass that follows adds the detail.
    init = inputs.init_image(request.init_image, **size)
    # One copy of the init image per image of the batch (see _Job._batch).
    arguments = {_INIT_IMAGE: init, "strength": request.strength}
    if mode is Mode.INPAINT:
        assert request.mask_image is not None
        mask = inputs.mask_image(request.mask_image, **size)
        return size | arguments | {"mask_image": mask}
    # Image-to-image pipelines take their size from the image.
    return arguments


def _check_denoising_steps(request: GenerateRequest) -> None:
    # Image-to-image pipelines run int(steps * strength) steps; none at all would
    # return an empty batch.
    if int(request.steps * request.strength) < 1:
        fewest = next(n for n in range(1, 10 * MAX_STEPS) if int(n * request.strength) >= 1)
        raise BadRequest(
            f"strength {request.strength:g} with {request.steps} steps leaves no denoising step;"
            f" use at least {fewest} steps or a higher strength"
        )


class _Job:
    """One request's pipeline calls: batches of images, each with its own seeds."""

    def __init__(
        self,
        request: GenerateRequest,
        model: LoadedModel,
        pipeline: DiffusionPipeline,
        sampler: Sampler,
        arguments: dict[str, Any],
        seeds: list[int],
        on_step: StepCallback,
        preview: PreviewWriter | None,
    ) -> None:
        self.request = request
        self.model = model
        self.pipeline = pipeline
        self.sampler = sampler
        self.arguments = arguments
        self.seeds = seeds
        self.on_step = on_step
        self.preview = preview
        self.before_batch: BatchHook = lambda size: None
        self.scheduler_recipe: dict[str, Any] = {}

    def run(self, size: int, free_memory: Callable[[], None]) -> list[Image.Image]:
        """All images, `size` at a time; on out-of-memory, retry that batch in halves."""
        images: list[Image.Image] = []
        batches_done = 0
        while len(images) < len(self.seeds):
            start = len(images)
            indices = range(start, min(len(self.seeds), start + size))
            batches = batches_done + math.ceil((len(self.seeds) - start) / size)
            out_of_memory = False
            try:
                images += self._batch(indices, batches_done, batches)
                batches_done += 1
            except torch.cuda.OutOfMemoryError:
                out_of_memory = True
            if out_of_memory:
                # Outside the except block: the traceback's frames, which hold the
                # batch's tensors, are gone by now, so the cache can really be emptied.
                free_memory()
                if size == 1:
                    raise OutOfMemory(self._too_big())
                size = max(1, len(indices) // 2)
        return images

    def _too_big(self) -> str:
        request = self.request
        return (
            f"the GPU ran out of memory making {request.count} image(s) at"
            f" {request.width}x{request.height}, even one at a time;"
            " try a smaller size or fewer images"
        )

    def _batch(self, indices: range, batch: int, batches: int) -> list[Image.Image]:
        seeds = [self.seeds[index] for index in indices]
        scheduler = self.sampler.build(self.model.scheduler_config, seeds)
        self.scheduler_recipe = {
            "class": type(scheduler).__name__,
            "options": dict(self.sampler.options),
            # Every scheduler is a ConfigMixin; SchedulerMixin alone does not say so.
            "config": dict(cast(Any, scheduler).config),
        }
        self.pipeline.scheduler = scheduler
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        every = self.request.preview_every

        def step_end(
            pipeline: DiffusionPipeline, index: int, timestep: Any, tensors: dict[str, Any]
        ) -> dict[str, Any]:
            per_batch = pipeline.num_timesteps
            preview = None
            if self.preview is not None and (index + 1) % every == 0:
                preview = self.preview.write(tensors["latents"])
            self.on_step(batch * per_batch + index + 1, batches * per_batch, preview)
            return tensors

        arguments = dict(self.arguments)
        if _INIT_IMAGE in arguments:
            # Given once, the inpainting pipelines encode the init image with the
            # first generator only, so image i would depend on the batch it ran in;
            # one copy per image makes each encode draw from its own generator.
            arguments["image"] = [arguments.pop(_INIT_IMAGE)] * len(indices)
        self.before_batch(len(indices))
        # Each diffusers pipeline class declares its own __call__; the base class has none.
        call = cast(Callable[..., Any], self.pipeline)
        output = call(
            prompt=self.request.prompt,
            negative_prompt=self.request.negative_prompt or None,
            num_inference_steps=self.request.steps,
            guidance_scale=self.request.cfg,
            num_images_per_prompt=len(indices),
            generator=generators,
            callback_on_step_end=step_end,
            **arguments,
        )
        images: list[Image.Image] = output.images
        return images


@contextmanager
def _tiled_decode(pipeline: DiffusionPipeline, request: GenerateRequest) -> Iterator[None]:
    """Let the VAE decode in tiles for an upscale or a large image, for this job only.

    The VAE is shared by every mode of the model, so tiling is switched back off after.
    """
    large = max(request.width, request.height) > TILED_DECODE_ABOVE_SIDE
    if not (large or request.mode is Mode.UPSCALE):
        yield
        return
    pipeline.vae.enable_tiling()
    try:
        yield
    finally:
        pipeline.vae.disable_tiling()


def _clock(device: torch.device) -> float:
    # CUDA runs asynchronously: without a sync the clock stops before the GPU does.
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
