"""Item 3: live previews every 5 steps, by the tiny autoencoder and by the linear
approximation, against no previews: what they add to a job.

Each job is the engine's model and pipeline call (engine.models), with the
engine's `PreviewWriter` called from the step callback as engine.pipelines
does; the three variants are interleaved job by job.
"""

# diffusers leaves many public functions unannotated; their results are typed here.
# mypy: untyped-calls-exclude=diffusers

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch

from engine.models import LoadedModel, ModelRegistry
from engine.previews import PreviewWriter
from engine.protocol import ModelSpec
from engine.samplers import find_sampler

from ..context import Context, say
from ..report import Figure, Section
from ..stats import ms, ratio

TITLE = "Previews every 5 steps vs none"
EVERY = 5
TARGET = 1.05


def timed_job(
    model: LoadedModel, writer: PreviewWriter | None, side: int, steps: int, seed: int
) -> tuple[float, float]:
    """(seconds for one image, seconds of it spent writing previews), with a preview
    every EVERY steps when `writer` is given."""
    pipeline: Any = model.pipeline
    writing = 0.0
    started = time.perf_counter()
    pipeline.scheduler = find_sampler("Euler").build(model.scheduler_config, [seed])

    def step_end(pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        nonlocal writing
        if writer is not None and (index + 1) % EVERY == 0:
            begun = time.perf_counter()
            writer.write(tensors["latents"])
            writing += time.perf_counter() - begun
        return tensors

    call = cast(Callable[..., Any], pipeline)
    call(
        prompt="a harbour at dawn",
        num_inference_steps=steps,
        guidance_scale=7.0,
        width=side,
        height=side,
        generator=[torch.Generator("cpu").manual_seed(seed)],
        callback_on_step_end=step_end,
    )
    return time.perf_counter() - started, writing


def measure(
    model: LoadedModel, folder: Path, side: int, steps: int, rounds: int, warm_up: bool = True
) -> dict[str, list[float]]:
    """Seconds per job for each variant, interleaved, after one warm-up job of each."""
    variants: dict[str, PreviewWriter | None] = {
        "none": None,
        "linear": PreviewWriter(folder / "linear.png", model.family, None),
    }
    if model.preview_decoder is not None:
        variants["taesd"] = PreviewWriter(folder / "taesd.png", model.family, model.preview_decoder)
    for writer in variants.values() if warm_up else ():
        timed_job(model, writer, side, steps, 0)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for name in variants:
        times[f"{name}/writing"] = []
    for number in range(rounds):
        for name, writer in variants.items():
            seconds, writing = timed_job(model, writer, side, steps, 1 + number)
            times[name].append(seconds)
            times[f"{name}/writing"].append(writing)
    return times


def figures(section: Section, times: dict[str, list[float]], label: str, steps: int) -> None:
    none = statistics.median(times["none"])
    for name, about in (("taesd", "tiny autoencoder"), ("linear", "linear approximation")):
        if name not in times:
            continue
        with_previews = statistics.median(times[name])
        share = ratio(with_previews, none)
        # Timed inside the same jobs, so machine noise between jobs does not enter it:
        # the target is judged on this share; the wall-time ratio beside it is noisier.
        writing = statistics.median(times[f"{name}/writing"])
        added = writing / max(with_previews - writing, 1e-9)
        section.add(
            Figure(
                name=f"{about} previews, {label}",
                ratio=share,
                ratio_means=f"job time with a preview every {EVERY} steps / without",
                values={
                    "with_ms": ms(with_previews),
                    "without_ms": ms(none),
                    "previews_per_job": steps // EVERY,
                    "writing_ms_per_preview": ms(writing / max(1, steps // EVERY)),
                    "writing_share_of_job_pct": round(100 * writing / with_previews, 2),
                    "jobs_each": len(times[name]),
                },
                target=f"< {round((TARGET - 1) * 100)} % added (the share timed inside the jobs)",
                met=1 + added < TARGET,
            )
        )


async def run(ctx: Context, section: Section) -> None:
    sizes = ctx.sizes
    spec = ModelSpec(
        source=str(ctx.models["sd15"]),
        preview_decoder=str(ctx.models["taesd"]),
        width=64,
        height=64,
    )
    model = ModelRegistry({"tiny": spec}, torch.device("cpu")).get("tiny")
    side, steps = sizes.preview_side, sizes.preview_steps
    say(f"previews: {sizes.preview_rounds} round(s) of none / linear / taesd, {steps} steps")
    # In a thread: the event loop keeps serving the local Discord's gateway meanwhile.
    times = await asyncio.to_thread(
        measure, model, ctx.folder("previews"), side, steps, sizes.preview_rounds, not ctx.smoke
    )
    figures(section, times, f"tiny model {side}x{side}, {steps} steps, CPU", steps)
    section.notes.append(
        "on the tiny model a denoising step is far cheaper than on a real one, so the"
        " previews' share here is an upper bound; the gpu item measures them at full size"
    )
