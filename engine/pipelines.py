"""Runs one `GenerateRequest`, a batch of jobs, on a loaded model and writes each job's PNGs.

What every mode shares lives here: one pipeline call for the images of every
job of the batch (one per cfg where --chaos spreads it), each job's prompt
encoded on its own (a blend: its prompts' embeddings averaged by weight) and
repeated per image, one CPU generator per image (seed + i of its job, or the
seeds it names, so an image is the same whether its job runs alone, in a
batch or split), step progress against `pipe.num_timesteps`, stopping early
for --stop (diffusers' interrupt: the remaining steps are skipped and what is
there is decoded), previews per job, cancelling one job or all of them from
the step callback, splitting a batch that does not fit in memory, and PNG
files that carry their own recipe. A mode only adds its inputs to the
pipeline call (`_Batch._mode_arguments`).
"""

from __future__ import annotations

import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from PIL import Image

from engine import inputs, loras, references
from engine.errors import BadRequest, Cancelled, InputFlagged, JobFailure, OutOfMemory
from engine.memory import device_memory, images_per_batch
from engine.models import LoadedModel, ModelRegistry
from engine.outputs import a1111_parameters, recipe, write_png
from engine.previews import PreviewWriter
from engine.prompts import prompt_embeddings
from engine.protocol import (
    MODE_INPUTS,
    BatchJob,
    GenerateRequest,
    ImageVerdict,
    JobResult,
    Mode,
    NsfwPolicy,
    OutputImage,
    consecutive_seeds,
    fewest_steps,
)
from engine.safety import ImageClassifier
from engine.samplers import Sampler, find_sampler
from engine.tiling import seamless

# Called after each denoising step with (step, total, {job id: preview path or None})
# for every job of the batch still running. Raising Cancelled from it stops the
# pipeline before the VAE decode and fails every job of the batch.
StepCallback = Callable[[int, int, Mapping[str, str | None]], None]
# Called with the number of images just before each pipeline call (fault injection).
BatchHook = Callable[[int], None]
# The ids of the batch's jobs cancelled so far; asked before each pipeline call and
# after each step, from the thread running the batch.
CancelledJobs = Callable[[], AbstractSet[str]]
# What became of one job: its result, or why it has none.
Outcome = JobResult | JobFailure

# A job id names files on disk, so it may not carry path separators or dots first.
_SAFE_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# Above this side the VAE decodes in tiles: a full decode of a large image is the
# single biggest allocation of a job. Upscales always allow tiles.
TILED_DECODE_ABOVE_SIDE = 1024
_CANCELLED = "cancelled while its batch ran; nothing was kept"
# Scheduler settings derived from the images' seeds: the list a chunk used names
# other jobs' seeds, and each image's seed is in its recipe anyway.
_SEED_DERIVED_CONFIG = {"noise_sampler_seed"}


def image_seeds(job: BatchJob) -> list[int]:
    """Seed of each image: the job's own list, else seed + i (consecutive_seeds)."""
    if job.seeds is not None:
        return list(job.seeds)
    return consecutive_seeds(job.seed, job.count)


def image_cfgs(request: GenerateRequest, job: BatchJob) -> list[float]:
    """Guidance scale of each image: the job's own list, else the batch's cfg."""
    return list(job.cfgs) if job.cfgs is not None else [request.cfg] * job.count


def steps_run(steps: int, stop: int) -> int:
    """How many of a pipeline call's `steps` denoising steps run with --stop `stop` (%)."""
    return max(1, round(steps * stop / 100))


def _no_cancels() -> AbstractSet[str]:
    return frozenset()


def generate(
    request: GenerateRequest,
    registry: ModelRegistry,
    on_step: StepCallback,
    before_batch: BatchHook | None = None,
    cancelled: CancelledJobs = _no_cancels,
    classifier: ImageClassifier | None = None,
) -> list[Outcome]:
    """Run every job of `request` in one pipeline call (split if memory demands it).

    Returns one outcome per job, in request order: a `JobResult`, a
    `BadRequest` for a job whose own input was refused (the others still
    run), `InputFlagged` for a job that withholds flagged images and whose
    input image the `classifier` flagged (before any GPU work), `Cancelled` for
    a job cancelled before its images were written, or `OutOfMemory` when even
    one image at a time did not fit. A problem shared by the whole batch
    (model, sampler, settings) is raised instead. With a `classifier`, every
    output image carries its verdict, and a flagged preview of a job that does
    not allow flagged images is not shown.
    """
    sampler = find_sampler(request.sampler)
    model = registry.get(request.model)
    pipeline = model.pipeline_for(request.mode, request.control_type)
    adapters = loras.adapters_for(
        request, model.family, registry.spec(request.model), registry.loras
    )
    shown = references.references_for(request, registry.spec(request.model))
    if "init_image" in MODE_INPUTS[request.mode]:
        _check_denoising_steps(request)
    outcomes: dict[str, Outcome] = {}
    plans: list[_JobPlan] = []
    for job in request.jobs:
        try:
            plan = _plan(request, job, model)
            if classifier is not None:
                _screen_inputs(job, classifier)
            plans.append(plan)
        except (BadRequest, InputFlagged) as refused:
            outcomes[job.job_id] = refused
    if plans:
        batch = _Batch(request, model, pipeline, sampler, plans, on_step, cancelled)
        batch.classifier = classifier
        batch.adapters = adapters
        batch.references = shown
        if before_batch is not None:
            batch.before_batch = before_batch
        outcomes |= _run(batch, registry)
    return [outcomes[job.job_id] for job in request.jobs]


@dataclass
class _JobPlan:
    """One job of the batch with its inputs read and sized to the batch."""

    job: BatchJob
    output_dir: Path
    seeds: list[int]
    cfgs: list[float]
    input_sha256: dict[str, str]
    init: Image.Image | None = None
    mask: Image.Image | None = None
    control: Image.Image | None = None
    # Outpainting: the picture on its canvas and the mask the engine drew (init and mask).
    canvas: inputs.Canvas | None = None
    preview: PreviewWriter | None = None


@dataclass(frozen=True)
class _Slot:
    """One image of the batch: its job (index into the plans), index in that job, seed
    and guidance scale (images with different ones cannot share a pipeline call)."""

    plan: int
    index: int
    seed: int
    cfg: float


def _plan(request: GenerateRequest, job: BatchJob, model: LoadedModel) -> _JobPlan:
    if not _SAFE_JOB_ID.fullmatch(job.job_id):
        raise BadRequest("a job id may hold only letters, digits, '_', '-' and '.' (not first)")
    size = {"width": request.width, "height": request.height}
    plan = _JobPlan(job, Path(job.output_dir), image_seeds(job), image_cfgs(request, job), {})
    # Upscale: the resize to the (larger) request size is the upscale; the
    # low-strength pass that follows adds the detail.
    if job.frame is not None:
        assert job.init_image is not None  # the protocol pairs them (Mode.OUTPAINT)
        picture = inputs.init_image(job.init_image, job.frame.width, job.frame.height)
        plan.canvas = inputs.outpaint_canvas(picture, request.width, request.height, job.frame)
        plan.init, plan.mask = plan.canvas.image, plan.canvas.mask
    elif job.init_image is not None:
        plan.init = inputs.init_image(job.init_image, **size)
    if job.mask_image is not None:
        plan.mask = inputs.mask_image(job.mask_image, **size)
    if job.control_image is not None:
        plan.control = inputs.control_image(job.control_image, request.control_type, **size)
    plan.input_sha256 = {
        name: inputs.file_sha256(path)
        for name in ("init_image", "mask_image", "control_image")
        if (path := getattr(job, name)) is not None
    }
    plan.output_dir.mkdir(parents=True, exist_ok=True)
    if request.preview_every:
        plan.preview = PreviewWriter(
            plan.output_dir / f"{job.job_id}-preview.png", model.family, model.preview_decoder
        )
    return plan


# The input images the classifier checks: what a member uploaded to start from or to
# follow. A mask is black and white, and says nothing about what is shown.
_SCREENED_INPUTS = ("init_image", "control_image")


def _screen_inputs(job: BatchJob, classifier: ImageClassifier) -> None:
    """Raise InputFlagged when the job withholds flagged images and one of its input
    images is flagged; the images are classified as the member gave them."""
    if job.nsfw_policy is not NsfwPolicy.BLOCK:
        return
    verdicts = {
        name: classifier.classify_file(path)
        for name in _SCREENED_INPUTS
        if (path := getattr(job, name)) is not None
    }
    if any(verdict.flagged for verdict in verdicts.values()):
        raise InputFlagged("the image filter flagged an input image", verdicts)


def _run(batch: _Batch, registry: ModelRegistry) -> dict[str, Outcome]:
    request, model, plans = batch.request, batch.model, batch.plans
    memory = device_memory(registry.device)
    first_size = images_per_batch(
        model.family,
        request.width,
        request.height,
        len(batch.slots),
        model.dtype,
        None if memory is None else memory.free,
    )
    started = _clock(registry.device)
    try:
        with (
            _tiled_decode(batch.pipeline, request),
            seamless(batch.pipeline, request.tile),
            loras.applied(batch.pipeline, batch.adapters),
            references.applied(
                batch.pipeline, model.family, batch.references
            ) as batch.reference_arguments,
        ):
            images = batch.run(first_size, registry.free_memory)
    except OutOfMemory:
        gone = batch.cancelled()
        return {
            plan.job.job_id: Cancelled(_CANCELLED)
            if plan.job.job_id in gone
            else OutOfMemory(_too_big(request, plan.job))
            for plan in plans
        }
    except Cancelled as stopped:
        # Every job of the batch was cancelled mid-run: each used its share of the time.
        shares = _shares(batch, _clock(registry.device) - started)
        stopped.used = {plan.job.job_id: share for plan, share in zip(plans, shares, strict=True)}
        raise
    finally:
        for plan in plans:
            if plan.preview is not None:
                plan.preview.remove()
    batch_seconds = _clock(registry.device) - started

    # Asked once more before any file is written: a job cancelled while the last
    # images decoded is discarded rather than delivered.
    gone = batch.cancelled()
    # The batch's time is shared in proportion to the images that went into a
    # pipeline call; images of a cancelled job that ran are its own share.
    shares = _shares(batch, batch_seconds)
    outcomes: dict[str, Outcome] = {}
    # PNG encoding runs in zlib with the GIL released: the batch's files are written
    # in parallel (a 1024x1024 PNG takes ~0.2 s of CPU, while the GPU waits).
    with ThreadPoolExecutor(max_workers=max(1, min(len(images), os.cpu_count() or 1))) as writers:
        pending: dict[int, _Written] = {}
        for number, plan in enumerate(plans):
            if plan.job.job_id in gone:
                continue
            made = [images[i] for i, slot in enumerate(batch.slots) if slot.plan == number]
            verdicts: list[ImageVerdict | None] = [None] * len(made)
            if batch.classifier is not None:
                verdicts = [*batch.classifier.classify(made)]
            pending[number] = _Written(verdicts, _write(batch, plan, made, writers))
    for number, plan in enumerate(plans):
        job = plan.job
        if job.job_id in gone:
            outcomes[job.job_id] = Cancelled(_CANCELLED, {job.job_id: shares[number]})
            continue
        written = pending[number]
        outcomes[job.job_id] = JobResult(
            job_id=job.job_id,
            images=[
                file.result().model_copy(update={"verdict": verdict})
                for file, verdict in zip(written.files, written.verdicts, strict=True)
            ],
            gpu_seconds=shares[number],
            sampler=batch.sampler.name,
            batch_id=request.batch_id,
            batch_jobs=request.job_ids,
            batch_gpu_seconds=batch_seconds,
        )
    return outcomes


def _shares(batch: _Batch, seconds: float) -> list[float]:
    """Each job's share of the batch's `seconds`, in proportion to its images that went
    into a pipeline call."""
    ran = [batch.slots[index].plan for index in batch.started]
    return [
        seconds * ran.count(number) / len(ran) if ran else 0.0 for number in range(len(batch.plans))
    ]


@dataclass(frozen=True)
class _Written:
    """A job's images as the classifier judged them, and their files being written."""

    verdicts: list[ImageVerdict | None]
    files: list[Future[OutputImage]]


def _write(
    batch: _Batch, plan: _JobPlan, images: list[Image.Image], writers: ThreadPoolExecutor
) -> list[Future[OutputImage]]:
    """The job's PNG files, named <job_id>-<i>.png in its own output folder, written by
    `writers`."""
    job, sampler = plan.job, batch.sampler.name
    return [
        writers.submit(
            write_png,
            image,
            plan.output_dir / f"{job.job_id}-{index}.png",
            parameters=a1111_parameters(batch.request, job, sampler, seed, cfg),
            recipe=recipe(
                batch.request,
                job,
                sampler=sampler,
                scheduler=batch.scheduler_recipe,
                checkpoint_sha256=batch.model.checkpoint_sha256,
                input_sha256=plan.input_sha256,
                seed=seed,
                cfg=cfg,
                index=index,
            ),
            seed=seed,
        )
        for index, (image, seed, cfg) in enumerate(zip(images, plan.seeds, plan.cfgs, strict=True))
    ]


def _too_big(request: GenerateRequest, job: BatchJob) -> str:
    return (
        f"the GPU ran out of memory making {job.count} image(s) at"
        f" {request.width}x{request.height}, even one at a time;"
        " try a smaller size or fewer images"
    )


def _check_denoising_steps(request: GenerateRequest) -> None:
    # The bot refuses or raises these steps before queueing; a request sent by
    # another client is answered here.
    if request.steps < (fewest := fewest_steps(request.strength)):
        raise BadRequest(
            f"strength {request.strength:g} with {request.steps} steps leaves no denoising step;"
            f" use at least {fewest} steps or a higher strength"
        )


class _ChunkStopped(Exception):
    """Every job with images in the running pipeline call was cancelled: stop that call."""


class _Batch:
    """The pipeline calls of one request: chunks of images, each with its own seed."""

    def __init__(
        self,
        request: GenerateRequest,
        model: LoadedModel,
        pipeline: DiffusionPipeline,
        sampler: Sampler,
        plans: list[_JobPlan],
        on_step: StepCallback,
        cancelled: CancelledJobs,
    ) -> None:
        self.request = request
        self.model = model
        self.pipeline = pipeline
        self.sampler = sampler
        self.plans = plans
        self.on_step = on_step
        self.cancelled = cancelled
        self.before_batch: BatchHook = lambda size: None
        self.classifier: ImageClassifier | None = None
        # The LoRAs loaded while the batch runs (engine.loras), the draft LoRA included.
        self.adapters: list[loras.Adapter] = []
        # --sref / /blend (engine.references): the images, and the call's arguments for
        # them while the IP-Adapter is loaded.
        self.references: references.References | None = None
        self.reference_arguments: dict[str, Any] = {}
        self.scheduler_recipe: dict[str, Any] = {}
        # Every image of every job, in request order: a chunk is a run of these.
        self.slots = [
            _Slot(number, index, seed, cfg)
            for number, plan in enumerate(plans)
            for index, (seed, cfg) in enumerate(zip(plan.seeds, plan.cfgs, strict=True))
        ]
        # Slots that went into a pipeline call, finished or not (the GPU time's shares).
        self.started: set[int] = set()
        self._embeddings: dict[int, dict[str, torch.Tensor]] = {}

    def run(self, size: int, free_memory: Callable[[], None]) -> dict[int, Image.Image]:
        """Each slot's image, `size` at a time (of one cfg); on out-of-memory, retry
        that chunk in halves.

        A cancelled job's remaining slots are dropped before each chunk, so its
        work is removed where it has not started yet.
        """
        images: dict[int, Image.Image] = {}
        pending = list(range(len(self.slots)))
        chunks_done = 0
        while True:
            gone = self.cancelled()
            pending = [i for i in pending if self._job_of(i).job_id not in gone]
            if not pending:
                return images
            call = self._call_of(pending[0])
            chunk = [i for i in pending if self._call_of(i) == call][:size]
            chunks = chunks_done + self._chunks_left(pending, size)
            self.started.update(chunk)
            out_of_memory = False
            try:
                images.update(zip(chunk, self._chunk(chunk, chunks_done, chunks), strict=True))
            except torch.cuda.OutOfMemoryError:
                out_of_memory = True
            except _ChunkStopped:
                pass
            if out_of_memory:
                # Outside the except block: the traceback's frames, which hold the
                # chunk's tensors, are gone by now, so the cache can really be emptied.
                free_memory()
                if len(chunk) == 1:
                    raise OutOfMemory("even one image at a time did not fit")
                size = max(1, len(chunk) // 2)
                continue
            chunks_done += 1
            pending = [i for i in pending if i not in chunk]

    def _chunks_left(self, pending: list[int], size: int) -> int:
        """Pipeline calls still to make for `pending`: per cfg and embedding length, `size`
        images at a time."""
        per_call = Counter(self._call_of(i) for i in pending)
        return sum(math.ceil(count / size) for count in per_call.values())

    def _call_of(self, slot: int) -> tuple[float, int]:
        """What images sharing a pipeline call must have alike: cfg, embedding length."""
        return self.slots[slot].cfg, self._tokens(slot)

    def _job_of(self, slot: int) -> BatchJob:
        return self.plans[self.slots[slot].plan].job

    def _chunk(self, chunk: list[int], done: int, chunks: int) -> list[Image.Image]:
        slots = [self.slots[index] for index in chunk]
        seeds = [slot.seed for slot in slots]
        scheduler = self.sampler.build(self.model.scheduler_config, seeds)
        config = dict(cast(Any, scheduler).config)  # every scheduler is a ConfigMixin
        self.scheduler_recipe = {
            "class": type(scheduler).__name__,
            "options": dict(self.sampler.options),
            "config": {k: v for k, v in config.items() if k not in _SEED_DERIVED_CONFIG},
        }
        self.pipeline.scheduler = scheduler
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        # The row of each job's first image in this chunk: its preview.
        rows: dict[int, int] = {}
        for row, slot in enumerate(slots):
            rows.setdefault(slot.plan, row)
        every, stop = self.request.preview_every, self.request.stop

        def step_end(
            pipeline: DiffusionPipeline, index: int, timestep: Any, tensors: dict[str, Any]
        ) -> dict[str, Any]:
            per_chunk = steps_run(pipeline.num_timesteps, stop)
            step, total = done * per_chunk + index + 1, chunks * per_chunk
            if index + 1 >= per_chunk:
                # --stop: diffusers skips the remaining steps and decodes the latents.
                pipeline._interrupt = True
            gone = self.cancelled()
            running = [plan for plan in self.plans if plan.job.job_id not in gone]
            if not running:
                raise Cancelled(f"cancelled at step {step} of {total}")
            if all(self.plans[number].job.job_id in gone for number in rows):
                raise _ChunkStopped
            previews: dict[str, str | None] = {plan.job.job_id: None for plan in running}
            if every and (index + 1) % every == 0:
                for number, row in rows.items():
                    plan = self.plans[number]
                    if plan.preview is not None and plan.job.job_id in previews:
                        latents = tensors["latents"][row : row + 1]
                        previews[plan.job.job_id] = self._shown(plan, plan.preview.write(latents))
            self.on_step(step, total, previews)
            return tensors

        self.before_batch(len(slots))
        # Each diffusers pipeline class declares its own __call__; the base class has none.
        call = cast(Callable[..., Any], self.pipeline)
        output = call(
            num_inference_steps=self.request.steps,
            guidance_scale=slots[0].cfg,
            num_images_per_prompt=1,
            generator=generators,
            callback_on_step_end=step_end,
            **self._prompt_arguments(slots),
            **self._mode_arguments(slots),
            **self.reference_arguments,
        )
        images: list[Image.Image] = output.images
        return [self._finished(slot, image) for slot, image in zip(slots, images, strict=True)]

    def _finished(self, slot: _Slot, image: Image.Image) -> Image.Image:
        """An image as its job keeps it: an outpainted one with its picture put back."""
        canvas = self.plans[slot.plan].canvas
        return image if canvas is None else inputs.blend_seams(image, canvas)

    def _shown(self, plan: _JobPlan, preview: str) -> str | None:
        """The preview to show: none when it is flagged and the job does not allow that
        (the image so far could show what the finished image is withheld for)."""
        if self.classifier is None or plan.job.nsfw_policy is NsfwPolicy.ALLOW:
            return preview
        return None if self.classifier.classify_file(preview).flagged else preview

    def _prompt_arguments(self, slots: list[_Slot]) -> dict[str, torch.Tensor]:
        """Each image's prompt embeddings: its job's, encoded once and repeated per image."""
        per_image = [self._encoded(slot.plan) for slot in slots]
        return {name: torch.cat([e[name] for e in per_image]) for name in per_image[0]}

    def _encoded(self, number: int) -> dict[str, torch.Tensor]:
        """The job's embeddings (engine.prompts): its blend's prompts averaged by weight,
        or its one prompt."""
        if number not in self._embeddings:
            job = self.plans[number].job
            parts = [(part.text, part.weight) for part in job.blend] or [(job.prompt, 1.0)]
            self._embeddings[number] = prompt_embeddings(
                self.pipeline, self.model.family, parts, job.negative_prompt
            )
        return self._embeddings[number]

    def _tokens(self, slot: int) -> int:
        """How long the embedding of the slot's job is: a long prompt's is a multiple of
        77 tokens, and only images with embeddings of one length share a pipeline call
        (padding one with the empty prompt would change its image)."""
        return self._encoded(self.slots[slot].plan)["prompt_embeds"].shape[1]

    def _mode_arguments(self, slots: list[_Slot]) -> dict[str, Any]:
        """The call's mode-specific arguments: each image's input images, from its job."""
        request = self.request
        plans = [self.plans[slot.plan] for slot in slots]
        size = {"width": request.width, "height": request.height}
        mode = request.mode
        if mode is Mode.TXT2IMG:
            return size
        if mode is Mode.CONTROLNET:
            return size | {
                "image": [plan.control for plan in plans],
                "controlnet_conditioning_scale": request.control_scale,
            }
        # One init image per image, even when they are the same: given once, the
        # inpainting pipelines encode it with the first generator only, so an image
        # would depend on the batch it ran in.
        arguments = {"image": [plan.init for plan in plans], "strength": request.strength}
        if mode in (Mode.INPAINT, Mode.OUTPAINT):
            return size | arguments | {"mask_image": [plan.mask for plan in plans]}
        # Image-to-image pipelines take their size from the image.
        return arguments


@contextmanager
def _tiled_decode(pipeline: DiffusionPipeline, request: GenerateRequest) -> Iterator[None]:
    """Let the VAE decode in tiles for an upscale or a large image, for this batch only.

    The VAE is shared by every mode of the model, so tiling is switched back off after.
    A seamless texture (--tile) decodes whole: each tile of the decode would wrap around
    itself rather than around the image.
    """
    large = max(request.width, request.height) > TILED_DECODE_ABOVE_SIDE
    if request.tile or not (large or request.mode is Mode.UPSCALE):
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
