"""Item 2: compatible jobs from several members queued at once, batching on vs off.

`[engine] max_batch_images` is the switch: 1 runs one job per engine request,
8 lets the scheduler claim up to 8 images of compatible jobs (same model, size,
steps, sampler, cfg) as one batch. Rounds alternate the two settings on one
warm engine process (bench.queueing).
"""

from __future__ import annotations

import os
import statistics

from bot.jobs.engine_client import EngineProcess
from engine.protocol import ModelSpec

from ..context import Context, say
from ..history import job_spec
from ..queueing import Round, run_rounds
from ..report import Figure, Section
from ..stats import ms, ratio

TITLE = "Batching: compatible jobs from several members, on vs off"
ON, OFF = 8, 1


def member_latencies(rounds: list[Round]) -> dict[int, float]:
    """Each member's mean job latency over the rounds, by member number (1, 2, ...)."""
    owners = sorted({owner for r in rounds for owner in r.latencies})
    return {
        number: statistics.mean(seconds for r in rounds for seconds in r.latencies[owner])
        for number, owner in enumerate(owners, start=1)
    }


def figures(section: Section, rounds: list[Round], label: str) -> None:
    on = [r for r in rounds if r.max_batch_images == ON]
    off = [r for r in rounds if r.max_batch_images == OFF]
    on_rate = statistics.median(r.images_per_second for r in on)
    off_rate = statistics.median(r.images_per_second for r in off)
    jobs = sum(len(v) for v in on[0].latencies.values())
    section.add(
        Figure(
            name=f"throughput, {jobs} jobs from {len(on[0].latencies)} members, {label}",
            ratio=ratio(on_rate, off_rate),
            ratio_means=f"images/s with max_batch_images={ON} / with {OFF}",
            values={
                "on_images_per_s": round(on_rate, 3),
                "off_images_per_s": round(off_rate, 3),
                "on_round_s": round(statistics.median(r.seconds for r in on), 3),
                "off_round_s": round(statistics.median(r.seconds for r in off), 3),
                "rounds_each": len(on),
            },
        )
    )
    on_members, off_members = member_latencies(on), member_latencies(off)
    values: dict[str, float | int | str | bool | None] = {}
    for number in on_members:
        values[f"member{number}_on_ms"] = ms(on_members[number])
        values[f"member{number}_off_ms"] = ms(off_members[number])
    section.add(
        Figure(
            name="each member's latency (queued at once to job done, mean of their jobs)",
            ratio=ratio(
                statistics.mean(on_members.values()), statistics.mean(off_members.values())
            ),
            ratio_means="mean member latency on / off",
            values=values,
        )
    )


async def run(ctx: Context, section: Section) -> None:
    sizes = ctx.sizes
    model = ModelSpec(source=str(ctx.models["sd15"]), width=64, height=64, steps=sizes.steps)
    engine = EngineProcess("cpu", {"tiny": model}, dict(os.environ))
    say(
        f"batching: {sizes.batching_rounds} round(s) each of {sizes.batching_jobs} jobs from"
        f" {sizes.batching_members} members, max_batch_images {ON} and {OFF} alternating"
    )
    rounds = await run_rounds(
        ctx.folder("batching"),
        engine,
        "tiny",
        model,
        lambda n: job_spec(f"a red fox, take {n}", n, steps=sizes.steps),
        (OFF, ON),
        sizes.batching_rounds,
        sizes.batching_jobs,
        sizes.batching_members,
    )
    figures(section, rounds, f"tiny model 64x64, {sizes.steps} steps, CPU")
    section.notes.append(
        "with batching on, a claimed batch of compatible jobs is one engine request and one"
        " pipeline call; on a CPU that saves little (the UNet's work grows with the images),"
        " the GPU item measures what it is worth at full size"
    )
