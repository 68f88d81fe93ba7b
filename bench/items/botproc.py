"""Item 4: the bot process itself: start-up, memory idle and with a long queue, no
torch, and how fast the scheduler picks with 1000 jobs waiting from 100 members."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import timedelta

from bot.jobs.fair_queue import waiting_of
from bot.jobs.scheduler import Waiting, fair_order, next_batch
from bot.jobs.spec import stored_batch_key
from bot.store.jobs import QueuedRow
from bot.store.models import Lane, utcnow

from ..botrun import rss_bytes
from ..context import Context, say
from ..history import job_spec, members, write_queue
from ..report import Figure, Section
from ..stats import mb, ms, ratio

TITLE = "The bot process: start-up, memory, scheduler"
START_BUDGET_S = 1.0  # "starts in about a second" (DESIGN.md)
RSS_BUDGET_MB = 150.0
BATCH = 8


def queued_rows(count: int, member_count: int) -> list[QueuedRow]:
    rng = random.Random(count)
    people = members(member_count)
    now = utcnow()
    rows = []
    for number in range(count):
        spec = job_spec(f"queued job {number}", number)
        rows.append(
            QueuedRow(
                job_id=f"q{number:09d}",
                user_id=people[number % member_count],
                lane=Lane.PRIORITY if number % 50 == 0 else Lane.NORMAL,
                queued_at=now - timedelta(seconds=count - number),
                model=spec.model,
                batch_key=stored_batch_key(spec),
                images=1,
                estimate=rng.uniform(1.0, 5.0),
            )
        )
    return rows


def picks_per_second(pick: object, seconds: float) -> tuple[float, int]:
    assert callable(pick)
    done, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or done < 3:
        pick()
        done += 1
    return done / elapsed, done


def scheduler_figures(ctx: Context, section: Section) -> None:
    sizes = ctx.sizes
    rows = queued_rows(sizes.scheduler_waiting, sizes.scheduler_members)
    served = {user: random.Random(user).uniform(0, 600) for user in {r.user_id for r in rows}}
    waiting: list[Waiting] = [waiting_of(row, 1.0) for row in rows]
    pure, pure_n = picks_per_second(
        lambda: next_batch(fair_order(waiting, served), BATCH), sizes.scheduler_seconds
    )
    # What a worker's claim computes: every waiting row made a scheduler entry, then ordered.
    full, full_n = picks_per_second(
        lambda: next_batch(fair_order([waiting_of(r, 1.0) for r in rows], served), BATCH),
        sizes.scheduler_seconds,
    )
    section.add(
        Figure(
            name=f"scheduler picks, {len(rows)} waiting jobs from {len(served)} members",
            ratio=ratio(1 / full, 1.0),
            ratio_means="one claim's choice (entries from rows, fair order, batch) / 1 s of GPU",
            values={
                "picks_per_s": round(full, 1),
                "pick_ms": ms(1 / full),
                "fair_order_and_batch_only_per_s": round(pure, 1),
                "picks_timed": full_n + pure_n,
            },
        )
    )


async def run(ctx: Context, section: Section) -> None:
    sizes = ctx.sizes
    bot, startup = await ctx.bot()
    section.add(
        Figure(
            name="start-up to READY",
            ratio=ratio(startup.ready_seconds, START_BUDGET_S),
            ratio_means=f"spawn to READY / {START_BUDGET_S:g} s",
            values={
                "ready_s": round(startup.ready_seconds, 3),
                "commands_synced_s": round(startup.commands_seconds, 3),
            },
            target="about a second",
        )
    )
    say("bot: queue reply with an empty queue, then with a long queue")
    empty = [await bot.queued_reply(f"an empty queue {n}", n) for n in range(3)]
    # Let those three run out so the queue below starts from the engine idle.
    await asyncio.sleep(0.5)
    server = bot.server
    written = await asyncio.to_thread(
        write_queue,
        bot.database,
        sizes.queued_jobs,
        sizes.scheduler_members,
        server.guild_id,
        server.channel_id,
    )
    peak = rss_bytes(bot.pid) or 0
    long: list[float] = []
    for number in range(3):
        long.append(await bot.queued_reply(f"behind a long queue {number}", 100 + number))
        peak = max(peak, rss_bytes(bot.pid) or 0)
    sampled_until = time.monotonic() + (0.5 if ctx.smoke else 3.0)
    while time.monotonic() < sampled_until:  # the worker claims, reading every waiting row
        peak = max(peak, rss_bytes(bot.pid) or 0)
        await asyncio.sleep(0.1)
    waiting = int(str(bot.rows("select count(*) as n from jobs where state = 'queued'")[0]["n"]))
    idle = startup.rss_idle_bytes
    section.add(
        Figure(
            name=f"memory (RSS) with {written.jobs} queued jobs",
            ratio=ratio(peak / 2**20, RSS_BUDGET_MB),
            ratio_means=f"peak RSS with the queue / {RSS_BUDGET_MB:g} MB",
            values={
                "rss_idle_mb": mb(idle),
                "rss_queued_peak_mb": mb(peak),
                "queued_vs_idle": ratio(peak, idle) if idle else None,
                "still_waiting": waiting,
                "torch_in_bot_process": startup.torch_loaded,
            },
            target=f"< {RSS_BUDGET_MB:g} MB, no torch in the process",
            met=peak / 2**20 < RSS_BUDGET_MB and startup.torch_loaded is False,
        )
    )
    section.add(
        Figure(
            name=f"reply 'queued' behind {written.jobs} waiting jobs vs an empty queue",
            ratio=ratio(sorted(long)[1], sorted(empty)[1]),
            ratio_means="median time to the queued reply, long queue / empty queue",
            values={"long_queue_ms": ms(sorted(long)[1]), "empty_queue_ms": ms(sorted(empty)[1])},
        )
    )
    await asyncio.to_thread(scheduler_figures, ctx, section)
    # The bot would go on working through the queue: stop it before the next item.
    await ctx.close_bot()
