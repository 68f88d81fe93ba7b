"""Item 6: the full-size SD 1.5 and SDXL architectures on a CUDA GPU (bench.fullsize).

For each architecture, in one run:

1. UNet FLOPs per denoising step with classifier-free guidance, counted by
   `torch.utils.flop_counter.FlopCounterMode` (about 1.6 TFLOP for SD 1.5 at
   512x512, 13.5 for SDXL at 1024x1024).
2. Plain diffusers (the pipeline in fp16 with its defaults) against the engine as
   configured (the same weights loaded through engine.models with the `[engine]`
   speed options, compiled and warmed up first when compile is on), one image at a
   time, interleaved: seconds per image, denoising iterations per second, peak GPU
   memory, and each as a share of the device's dense fp16/bf16 peak.
3. Previews every 5 steps (full-size tiny autoencoder, linear) vs none, on the
   engine's model.
4. Throughput through the engine process and the job service (bench.queueing)
   with batches of 1, 2, 4 and 8 compatible jobs.

Without CUDA the item is skipped; `--smoke` runs the same code on the CPU with
toy-sized architectures (no compile), so every path stays exercised.
"""

# diffusers leaves many public functions unannotated; their results are typed here.
# mypy: untyped-calls-exclude=diffusers

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from bot.jobs.engine_client import EngineProcess
from bot.jobs.spec import JobSpec
from engine.models import ModelRegistry
from engine.protocol import EngineSpeed, ModelSpec

from .. import fullsize
from ..context import Context, say
from ..queueing import run_rounds
from ..report import Figure, Section
from ..stats import ratio
from . import previews

TITLE = "GPU: full-size SD 1.5 and SDXL, plain diffusers vs the engine"
GIB = 2**30

# Dense (no sparsity) fp16/bf16 tensor-core peaks in TFLOP/s from the vendors' data
# sheets, matched against torch.cuda.get_device_name in this order.
PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H200", 989.4),
    ("GH200", 989.4),
    ("H800", 989.4),
    ("A100", 312.0),
    ("L40S", 362.1),
    ("RTX 4090", 165.2),  # with fp32 accumulation, as PyTorch uses
)


def device_peak_tflops(name: str) -> float | None:
    return next((peak for key, peak in PEAK_TFLOPS if key in name), None)


@dataclass
class Timing:
    seconds: float
    it_per_s: float
    peak_bytes: int | None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_image(pipeline: Any, arch: fullsize.Architecture, seed: int) -> Timing:
    """One image as a job makes it; iterations per second over the denoising loop
    (first to last step callback), peak memory above what was allocated before."""
    device = pipeline.device
    marks: list[float] = []

    def step_end(pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        if index in (0, arch.steps - 1):
            _sync(device)
            marks.append(time.perf_counter())
        return tensors

    before = 0
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    started = time.perf_counter()
    call = cast(Callable[..., Any], pipeline)
    call(
        prompt="a lighthouse at dusk, oil painting",
        num_inference_steps=arch.steps,
        guidance_scale=arch.cfg,
        width=arch.width,
        height=arch.height,
        generator=[torch.Generator("cpu").manual_seed(seed)],
        callback_on_step_end=step_end,
    )
    _sync(device)
    seconds = time.perf_counter() - started
    loop = marks[-1] - marks[0] if len(marks) == 2 else seconds
    peak = torch.cuda.max_memory_allocated(device) - before if device.type == "cuda" else None
    return Timing(seconds, (arch.steps - 1) / loop if len(marks) == 2 else arch.steps / loop, peak)


def _weights_bytes(pipeline: Any) -> int:
    return sum(
        tensor.numel() * tensor.element_size()
        for module in pipeline.components.values()
        if isinstance(module, torch.nn.Module)
        for tensor in module.parameters()
    )


def _recompiles() -> int:
    counters = cast(Any, torch)._dynamo.utils.counters
    return int(counters["stats"]["unique_graphs"])


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _share(flops_per_step: int, it_per_s: float, peak: float | None) -> float | None:
    if peak is None:
        return None
    return round(100 * flops_per_step * it_per_s / (peak * 1e12), 1)


def _speed(ctx: Context, arch: fullsize.Architecture, device: torch.device) -> EngineSpeed:
    compile_on = ctx.options.gpu_compile and device.type == "cuda" and not ctx.smoke
    return EngineSpeed(
        compile=compile_on,
        compile_mode=cast(Any, ctx.options.gpu_compile_mode),
        warmup_model=arch.name,
        warmup_batch_images=sorted({1, max(ctx.options.gpu_batches)}),
    )


@dataclass
class InProcess:
    """What the in-process half of an architecture's run measured."""

    spec: ModelSpec
    speed: EngineSpeed
    flops: int
    timings: dict[str, list[Timing]]
    warm_up_s: float
    recompiled: int
    weights_bytes: int
    preview_times: dict[str, list[float]]


def compare_in_process(
    ctx: Context, arch: fullsize.Architecture, device: torch.device, folder: Path
) -> InProcess:
    """Build the model, save it for the engine, then time plain diffusers and the engine's
    loading of it, interleaved, and the previews (blocking: run it in a thread)."""
    flops = fullsize.unet_flops_per_step(arch)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    say(f"gpu {arch.name}: {flops / 1e12:.3g} TFLOP per CFG step; building random weights")
    plain = fullsize.build_pipeline(arch, device, dtype)
    model_dir = fullsize.write_model(plain, folder / "model")
    spec = ModelSpec(
        source=str(model_dir),
        width=arch.width,
        height=arch.height,
        steps=arch.steps,
        cfg=arch.cfg,
        sampler="Euler",
        preview_decoder=str(fullsize.write_taesd(arch, folder / "taesd")),
    )
    speed = _speed(ctx, arch, device)
    if arch.xl:
        speed = speed.model_copy(
            update={"sdxl_vae": str(fullsize.write_fp16_safe_vae(arch, folder / "vae-fp16"))}
        )
    how = "compiling" if speed.compile else "no compile"
    say(f"gpu {arch.name}: loading through the engine ({how})")
    registry = ModelRegistry({arch.name: spec}, device, speed_options=speed)
    started = time.perf_counter()
    registry.warm_up()
    warm_up_s = time.perf_counter() - started
    engine_model = registry.get(arch.name)
    engine = engine_model.pipeline
    for pipeline in (plain, engine):  # first calls pay for kernels' selection and caches
        timed_image(pipeline, arch, 0)
    compiled_before = _recompiles()
    timings: dict[str, list[Timing]] = {"plain": [], "engine": []}
    for number in range(ctx.sizes.gpu_rounds):
        order = ("plain", "engine") if number % 2 == 0 else ("engine", "plain")
        for name in order:
            timings[name].append(timed_image(plain if name == "plain" else engine, arch, number))
    recompiled = _recompiles() - compiled_before
    say(f"gpu {arch.name}: previews")
    preview_times = previews.measure(
        engine_model, folder, arch.width, arch.steps, max(1, ctx.sizes.gpu_rounds)
    )
    weights = _weights_bytes(engine)
    del plain, engine, engine_model, registry
    _free()
    return InProcess(spec, speed, flops, timings, warm_up_s, recompiled, weights, preview_times)


async def measure_architecture(
    ctx: Context,
    section: Section,
    arch: fullsize.Architecture,
    device: torch.device,
    batches: bool = True,
) -> None:
    folder = ctx.folder(f"gpu-{arch.name}")
    peak = ctx.options.peak_tflops or (
        device_peak_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    )
    run = await asyncio.to_thread(compare_in_process, ctx, arch, device, folder)
    timings, flops = run.timings, run.flops

    def median(name: str, key: Callable[[Timing], float]) -> float:
        return statistics.median(key(t) for t in timings[name])

    def peak_gib(name: str) -> float | None:
        if device.type != "cuda":
            return None
        return round(max((t.peak_bytes or 0) for t in timings[name]) / GIB, 2)

    plain_it, engine_it = (
        median("plain", lambda t: t.it_per_s),
        median("engine", lambda t: t.it_per_s),
    )
    speedup = ratio(engine_it, plain_it)
    wanted = arch.min_it_per_s_speedup
    section.add(
        Figure(
            name=f"{arch.title}, one image: engine vs plain diffusers",
            ratio=speedup,
            ratio_means="engine it/s / plain diffusers it/s (denoising loop)",
            values={
                "engine_it_per_s": round(engine_it, 2),
                "plain_it_per_s": round(plain_it, 2),
                "engine_s_per_image": round(median("engine", lambda t: t.seconds), 3),
                "plain_s_per_image": round(median("plain", lambda t: t.seconds), 3),
                "engine_share_of_peak_pct": _share(flops, engine_it, peak),
                "plain_share_of_peak_pct": _share(flops, plain_it, peak),
                "engine_peak_activation_gib": peak_gib("engine"),
                "plain_peak_activation_gib": peak_gib("plain"),
                "weights_gib": round(run.weights_bytes / GIB, 2),
                "unet_tflop_per_step": round(flops / 1e12, 3),
                "compile_warm_up_s": round(run.warm_up_s, 1),
                "graphs_compiled_during_timed_jobs": run.recompiled,
            },
            target=None if wanted is None else f">= {wanted:g}x plain diffusers' it/s",
            met=None
            if wanted is None or speedup is None or device.type != "cuda"
            else speedup >= wanted,
        )
    )
    previews.figures(section, run.preview_times, arch.title, arch.steps)
    if batches:
        await measure_batches(ctx, section, arch, device, run.spec, run.speed, flops, peak)


async def measure_batches(
    ctx: Context,
    section: Section,
    arch: fullsize.Architecture,
    device: torch.device,
    spec: ModelSpec,
    speed: EngineSpeed,
    flops: int,
    peak: float | None,
) -> None:
    batches = ctx.options.gpu_batches
    jobs = 2 * max(batches)
    say(f"gpu {arch.name}: {jobs} jobs through the engine process, batches of {batches}")
    engine = EngineProcess(str(device), {arch.name: spec}, dict(os.environ), speed=speed)

    def job(number: int) -> JobSpec:
        return JobSpec(
            prompt=f"a lighthouse at dusk, take {number}",
            model=arch.name,
            width=arch.width,
            height=arch.height,
            steps=arch.steps,
            cfg=arch.cfg,
            sampler="Euler",
            seed=number,
            count=1,
        )

    rounds = await run_rounds(
        ctx.folder(f"gpu-{arch.name}-queue"), engine, arch.name, spec, job, batches, 1, jobs, 4
    )
    by_batch = {r.max_batch_images: r.images_per_second for r in rounds}
    latency = {
        r.max_batch_images: statistics.mean(s for seconds in r.latencies.values() for s in seconds)
        for r in rounds
    }
    single = by_batch[min(batches)]
    for batch in batches:
        rate = by_batch[batch]
        section.add(
            Figure(
                name=f"{arch.title}: {jobs} jobs through the engine, batches of up to {batch}",
                ratio=ratio(rate, single),
                ratio_means=f"images/s / images/s with batches of {min(batches)}",
                values={
                    "images_per_s": round(rate, 3),
                    "share_of_peak_pct": _share(flops, rate * arch.steps, peak),
                    "mean_job_latency_s": round(latency[batch], 3),
                },
                target=None
                if arch.min_images_per_s is None or batch != max(batches)
                else f">= {arch.min_images_per_s:g} images/s",
                met=None
                if arch.min_images_per_s is None or batch != max(batches) or device.type != "cuda"
                else rate >= arch.min_images_per_s,
            )
        )


async def run(ctx: Context, section: Section) -> None:
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if ctx.smoke:
        architectures = fullsize.TINY
        section.notes.append(
            f"smoke: this item's code on {device.type} with toy-sized architectures, no"
            " compile; its figures say nothing about full-size models"
        )
    elif device.type == "cuda":
        architectures = fullsize.FULL
    else:
        section.skipped = (
            "no CUDA device here (torch.cuda.is_available() is False:"
            f" torch {torch.__version__}, a CPU build or no GPU); run `python -m bench --items"
            " gpu` on an H100/H200-class machine with CUDA torch"
        )
        return
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = ctx.options.peak_tflops or device_peak_tflops(name)
    if device.type == "cuda" and peak is None:
        section.notes.append(
            f"no peak TFLOP/s known for {name!r}: pass --peak-tflops for the share of the peak"
        )
    elif peak is not None:
        section.notes.append(f"{name}: dense fp16/bf16 peak taken as {peak:g} TFLOP/s")
    options = _speed(ctx, next(iter(architectures.values())), device).model_dump(
        exclude={"warmup_model", "warmup_batch_images", "sdxl_vae"}
    )
    section.notes.append(
        "plain = the pipeline built in fp16 (fp32 on a CPU) with diffusers' defaults;"
        f" engine = the same weights through engine.models with {options};"
        " SDXL's engine VAE needs no fp32 upcast (as sdxl-vae-fp16-fix), plain SDXL upcasts;"
        " both run Euler"
    )
    for number, key in enumerate(ctx.options.gpu_models):
        # In smoke mode the engine-process batches (the same code for both) run once.
        batches = not ctx.smoke or number == 0
        await measure_architecture(ctx, section, architectures[key], device, batches)
