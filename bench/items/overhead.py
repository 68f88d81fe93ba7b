"""Item 1: what the bot adds to a job, against the same job as a direct pipeline call.

N text-to-image jobs on the tiny model go the whole way: the local Discord
server sends /imagine to the real bot process, which writes the job, queues it,
runs it in its engine process, and edits the reply with the image files; the
time is the server's, from sending the interaction to storing the reply with
files. The same N jobs also run as direct diffusers calls in this process,
interleaved one for one, so both see the same machine load. The overhead of
job i is its bot time minus its direct time.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from ..botrun import Imagined
from ..context import Context, say
from ..direct import DirectPipeline
from ..report import Figure, Section
from ..stats import ms, percentile, ratio

TITLE = "Bot overhead per job: the whole path vs direct diffusers calls"
# At real GPU job times (1-5 s), the bot's share is its overhead over these.
TARGET_P50_MS = 50.0

# Where the path's time goes, from the server's clock and the job row's times:
# stage name -> what it covers.
STAGES = {
    "door": "interaction sent -> deferral (checks, journal)",
    "queueing": "deferral -> job row (attachments, quota admission)",
    "claim": "job row -> claimed by a worker",
    "engine_outside_compute": "claimed -> recorded finished, less the engine's compute"
    " (request, engine process, PNG files, result recorded)",
    "delivery": "recorded finished -> reply with the files stored by the server",
}


def stages(run: Imagined, row: dict[str, object], gpu_seconds: float) -> dict[str, float]:
    """Seconds in each of STAGES for one job whose engine computed for `gpu_seconds`;
    the row's UTC times are moved to the server's monotonic clock (one machine, so
    one offset)."""
    offset = time.time() - time.monotonic()

    def at(column: str) -> float:
        stored = datetime.fromisoformat(str(row[column])).replace(tzinfo=UTC)
        return stored.timestamp() - offset

    created, started, finished = at("created_at"), at("started_at"), at("finished_at")
    return {
        "door": run.deferred_at - run.sent_at,
        "queueing": created - run.deferred_at,
        "claim": started - created,
        "engine_outside_compute": finished - started - gpu_seconds,
        "delivery": run.replied_at - finished,
    }


async def run(ctx: Context, section: Section) -> None:
    sizes = ctx.sizes
    bot, _ = await ctx.bot()
    direct = DirectPipeline(ctx.models["sd15"], 64, 64, sizes.steps)
    say(f"overhead: warm-up, then {sizes.overhead_jobs} jobs each way, interleaved")
    # The first job starts the engine process and loads the model: not measured.
    warm = await bot.imagine("warm-up", 0)
    await bot.settled(warm.interaction_id)
    direct.run("warm-up", 0)

    through_bot: list[float] = []
    in_engine: list[float] = []
    directly: list[float] = []
    by_stage: dict[str, list[float]] = {name: [] for name in STAGES}
    for index in range(sizes.overhead_jobs):
        prompt, seed = f"a lighthouse at dusk, study {index}", 1000 + index
        first_direct = index % 2 == 1
        if first_direct:
            directly.append(await asyncio.to_thread(direct.run, prompt, seed))
        imagined = await bot.imagine(prompt, seed)
        row = await bot.settled(imagined.interaction_id)
        through_bot.append(imagined.seconds)
        gpu_seconds = float(str(row["gpu_seconds"] or 0.0))
        in_engine.append(gpu_seconds)
        for name, seconds in stages(imagined, row, gpu_seconds).items():
            by_stage[name].append(seconds)
        if not first_direct:
            directly.append(await asyncio.to_thread(direct.run, prompt, seed))

    overhead = [b - d for b, d in zip(through_bot, directly, strict=True)]
    p50, p95 = percentile(overhead, 0.5), percentile(overhead, 0.95)
    bot_p50, direct_p50 = percentile(through_bot, 0.5), percentile(directly, 0.5)
    section.add(
        Figure(
            name=f"{sizes.overhead_jobs} jobs, 64x64, {sizes.steps} steps",
            ratio=ratio(bot_p50, direct_p50),
            ratio_means="bot path p50 / direct call p50",
            values={
                "overhead_p50_ms": ms(p50),
                "overhead_p95_ms": ms(p95),
                "bot_p50_ms": ms(bot_p50),
                "bot_p95_ms": ms(percentile(through_bot, 0.95)),
                "direct_p50_ms": ms(direct_p50),
                "direct_p95_ms": ms(percentile(directly, 0.95)),
                "share_of_1s_gpu_job_pct": round(100 * p50 / 1.0, 2),
                "share_of_5s_gpu_job_pct": round(100 * p50 / 5.0, 2),
            },
            target=f"overhead p50 < {TARGET_P50_MS:g} ms (< 2 % of a 1-5 s GPU job)",
            met=p50 * 1000 < TARGET_P50_MS,
        )
    )
    engine_p50 = percentile(in_engine, 0.5)
    outside_p50 = percentile([b - e for b, e in zip(through_bot, in_engine, strict=True)], 0.5)
    section.add(
        Figure(
            name="compute inside the engine vs the direct call",
            ratio=ratio(engine_p50, direct_p50),
            ratio_means="engine's measured job time p50 / direct call p50",
            values={
                "engine_p50_ms": ms(engine_p50),
                "direct_p50_ms": ms(direct_p50),
                "outside_engine_p50_ms": ms(outside_p50),
            },
        )
    )
    stage_p50 = {name: percentile(samples, 0.5) for name, samples in by_stage.items()}
    section.add(
        Figure(
            name="where the path's time outside the engine's compute goes (stages' p50)",
            ratio=ratio(sum(stage_p50.values()), outside_p50),
            ratio_means="sum of the stages' p50 / the path's p50 outside the engine's compute",
            values={f"{name}_p50_ms": ms(seconds) for name, seconds in stage_p50.items()},
        )
    )
    section.notes.append(
        "stages: " + "; ".join(f"{name} = {covers}" for name, covers in STAGES.items())
    )
    section.notes.append(
        "bot path = Discord interaction sent -> deferral -> job row -> queue claim -> engine"
        " process -> PNG files -> reply edited with the files (the local server's clock);"
        " previews off here (item 'previews'); progress edits at the default 2 s interval"
    )
