"""Item 5: the store's hot writes on an empty database and on one with 100 000 jobs of
history: admission (quota check, reservation, audit, in one transaction), the
scheduler's claim, and settling a finished job. Each operation alternates
between the two databases in small chunks, so both see the same machine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from bot.jobs.fair_queue import waiting_of
from bot.jobs.scheduler import fair_order, next_batch
from bot.quota import Limits
from bot.store.db import AsyncSession, open_engine, session_factory
from bot.store.jobs import JobStore, NewOutput, QueuedRow, Requester
from bot.store.ledger import Pricing
from bot.store.migrate import upgrade
from bot.store.quotas import QuotaRules, QuotaStore

from ..context import Context, say
from ..history import hex_id, job_spec, members, write_history
from ..report import Figure, Section
from ..stats import ratio

TITLE = "Store: admit, claim and settle on an empty vs a large database"
SLOWDOWN_LIMIT = 2.0
CHUNK = 5
# Limits high enough never to refuse, so every admission does the whole check.
LIMITS = Limits(images_per_day=10**9, gpu_seconds_per_day=1e12, cost_per_day=1e12)


def choose(rows: Sequence[QueuedRow], served: dict[int, float]) -> list[str]:
    """The service's chooser, one job per claim."""
    return [w.job_id for w in next_batch(fair_order([waiting_of(r, 1.0) for r in rows], served), 1)]


class Database:
    def __init__(self, path: Path, first_id: int) -> None:
        self.path = path
        self.first_id = first_id
        self.url = f"sqlite+aiosqlite:///{path}"
        self.engine: AsyncEngine | None = None
        self.sessions: async_sessionmaker[AsyncSession] | None = None
        self.jobs: JobStore | None = None
        self.quotas: QuotaStore | None = None
        self.times: dict[str, list[float]] = {"admit": [], "claim": [], "settle": []}
        self.admitted: list[str] = []
        self.claimed: list[str] = []

    def open(self) -> None:
        self.engine = open_engine(self.url)
        self.sessions = session_factory(self.engine)
        pricing = Pricing(1.0, "USD")
        self.jobs = JobStore(self.sessions, pricing)
        self.quotas = QuotaStore(
            self.sessions, QuotaRules(LIMITS, ZoneInfo("UTC"), False, pricing, 2.0)
        )

    async def warm_up(self, people: list[int]) -> None:
        """One untimed admit, claim and settle: connections, caches and statements ready."""
        await self.admit(-1, people)
        await self.claim()
        await self.settle(self.claimed[0])
        for times in self.times.values():
            times.clear()
        self.admitted.clear()
        self.claimed.clear()

    async def admit(self, number: int, people: list[int]) -> None:
        assert self.quotas is not None
        spec = job_spec(f"a quiet harbour, take {number}", max(0, number))
        user = people[number % len(people)]
        job_id = hex_id(self.first_id, number + 1)  # ids like the bot's
        started = time.perf_counter()
        await self.quotas.admit(
            job_id,
            Requester(user, f"member{user % 1000}"),
            spec,
            spec.model,
            spec.seeds,
        )
        self.times["admit"].append(time.perf_counter() - started)
        self.admitted.append(job_id)

    async def claim(self) -> None:
        assert self.jobs is not None
        started = time.perf_counter()
        jobs = await self.jobs.claim("cuda:0", choose, timedelta(hours=1))
        self.times["claim"].append(time.perf_counter() - started)
        self.claimed += [job.id for job in jobs]

    async def settle(self, job_id: str) -> None:
        assert self.jobs is not None
        output = NewOutput(0, f"images/{job_id}/0.png", "0" * 64, 1, 64, 64, {"seed": 1})
        started = time.perf_counter()
        await self.jobs.succeed(job_id, 2.5, [output])
        self.times["settle"].append(time.perf_counter() - started)

    async def close(self) -> None:
        if self.engine is not None:
            await self.engine.dispose()


async def alternate(
    count: int, databases: Sequence[Database], step: Callable[[Database, int], Awaitable[None]]
) -> None:
    """Run step(database, i) for i < count, CHUNK at a time on each database in turn."""
    for start in range(0, count, CHUNK):
        for database in databases:
            for number in range(start, min(count, start + CHUNK)):
                await step(database, number)


async def run(ctx: Context, section: Section) -> None:
    sizes = ctx.sizes
    folder = ctx.folder("store")
    empty, large = (
        Database(folder / "empty.db", 0xE000000000),
        Database(folder / "large.db", 0xF000000000),
    )
    for database in (empty, large):
        database.path.unlink(missing_ok=True)
        await asyncio.to_thread(upgrade, database.url)
    say(f"store: writing {sizes.history_jobs:,} jobs of history (executemany)")
    started = time.perf_counter()
    written = await asyncio.to_thread(write_history, large.path, sizes.history_jobs)
    history_s = time.perf_counter() - started
    people = members(100)
    ops = sizes.store_ops
    try:
        for database in (empty, large):
            database.open()
        say(f"store: {ops} admissions, claims and settlements on each database, alternating")
        both = (empty, large)
        for database in both:
            await database.warm_up(people)
        await alternate(ops, both, lambda database, n: database.admit(n, people))
        await alternate(ops, both, lambda database, n: database.claim())
        await alternate(ops, both, lambda database, n: database.settle(database.claimed[n]))
    finally:
        for database in (empty, large):
            await database.close()
    what = {
        "admit": "admission (user, ban and quota check, estimate, job, reservation, audit)",
        "claim": "claim (read every waiting job, fair order, compare-and-set, audit)",
        "settle": "settle (outputs, state change, ledger entry, audit)",
    }
    for op, label in what.items():
        empty_s, large_s = sum(empty.times[op]), sum(large.times[op])
        slowdown = ratio(large_s, empty_s)
        section.add(
            Figure(
                name=label,
                ratio=slowdown,
                ratio_means=f"time per op with {written.jobs:,} jobs of history / empty database",
                values={
                    "empty_per_s": round(len(empty.times[op]) / empty_s, 1),
                    "large_per_s": round(len(large.times[op]) / large_s, 1),
                    "ops_each": len(empty.times[op]),
                },
                target=f"< {SLOWDOWN_LIMIT:g}x slower with history",
                met=None if slowdown is None else slowdown < SLOWDOWN_LIMIT,
            )
        )
    section.notes.append(
        f"history: {written.jobs:,} finished jobs of 100 members over 30 days with their"
        f" outputs, ledger entries and 5 audit entries each ({written.rows:,} rows) written"
        f" in {history_s:.1f} s; claims start with {ops} jobs waiting and take one each"
    )
