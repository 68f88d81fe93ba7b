"""Item 8: the shared queue with 1, 2 and 4 workers, on PostgreSQL against SQLite.

Each database (a SQLite file; a throwaway PostgreSQL server started as the tests start
theirs, tests.databases) holds a queue of N jobs from 100 members, topped up to N before
every measurement. Two measurements per number of workers, each worker with a job store
and connections of its own (as a worker process has, `claimed_by` its own), all running
at once against the same database:

    claims    JobStore.claim in a loop with the worker pool's chooser (the fair order
              over the heads of the queues), nothing run, each worker a process of its
              own (as `atelier worker` is), started together: claims and jobs claimed
              per second, all workers together; once with one job per claim (batching
              off, the CPU default: every job is a claim) and once with batches of up to
              8 images (the CUDA default, bot.config.CUDA_BATCH_IMAGES; the bench's jobs
              are all alike, so each claim takes 8: the most batching gives)
    jobs      the real WorkerPool, one per worker, whose engine answers at once with
              a tiny PNG (no compute): claim, lease, engine request, image published,
              success recorded with its output, ledger entry and audit; the seconds a
              worker spends per job are the bot's overhead per job

The databases alternate measurement by measurement, so both see the same machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.config import CUDA_BATCH_IMAGES
from bot.jobs.engine_client import EngineProcess, ProgressCallback
from bot.jobs.events import JobEvents
from bot.jobs.fair_queue import FairQueue
from bot.jobs.pool import WorkerPool
from bot.jobs.scheduler import EngineView
from bot.store.db import open_engine, session_factory
from bot.store.jobs import JobStore, NewJob, QueuedRow, Requester, upsert_user
from bot.store.migrate import upgrade
from bot.store.models import new_id
from engine.protocol import GenerateRequest, JobError, JobResult, OutputImage
from tests.databases import postgres_server

from ..context import Context, say
from ..history import job_spec, members
from ..queueing import Finishes
from ..report import Figure, Section
from ..stats import ratio

TITLE = "Shared queue: claims and overhead per job with 1, 2, 4 workers, PostgreSQL vs SQLite"
WORKERS = (1, 2, 4)
# The targets: claims keep up with 200 jobs/s; PostgreSQL's overhead per job
# within 1.5x SQLite's.
CLAIMS_TARGET = 200.0
OVERHEAD_LIMIT = 1.5
FAIR_WINDOW = timedelta(hours=1)
# Images a claim may take: batching off (the CPU default), and the CUDA default.
CLAIM_IMAGES = (1, CUDA_BATCH_IMAGES)
# The model of every queued job (bench.history.job_spec), held by every claimer.
MODEL = "tiny"
# Claims held for the run: no lease runs out while the item measures.
LONG_LEASE = timedelta(hours=1)
FILL_CHUNK = 500
# A 1x1 PNG, what the instant engine "renders".
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


class InstantEngine(EngineProcess):
    """An engine that runs nothing: each job's one image is written at once, as the
    engine process writes its PNG files, so what is left is the bot's own path."""

    def __init__(self, device: str) -> None:
        super().__init__(device, {}, {})

    @property
    def alive(self) -> bool:
        return True

    async def start(self) -> None:  # type: ignore[override]
        return None

    async def run(
        self, request: GenerateRequest, on_progress: ProgressCallback, time_limit: float
    ) -> dict[str, JobResult | JobError]:
        results: dict[str, JobResult | JobError] = {}
        for job in request.jobs:
            # Off the event loop, as the engine process writes its files beside the bot.
            path = await asyncio.to_thread(_write_png, Path(job.output_dir))
            image = OutputImage(path=path, seed=0, width=1, height=1, sha256="0" * 64, recipe={})
            results[job.job_id] = JobResult(
                job_id=job.job_id,
                images=[image],
                gpu_seconds=0.0,
                sampler="Euler",
                batch_id=request.batch_id,
                batch_jobs=request.job_ids,
                batch_gpu_seconds=0.0,
            )
        return results

    async def cancel(self, job_id: str) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def kill(self) -> None:
        return None


def _write_png(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "0.png"
    path.write_bytes(PNG)
    return str(path)


@dataclass
class Database:
    """One database under test and what was measured on it, per number of workers."""

    name: str
    url: str
    folder: Path
    engine: AsyncEngine | None = None
    # Per (workers, images a claim may take).
    claims_per_s: dict[tuple[int, int], float] = field(default_factory=dict)
    claimed_per_s: dict[tuple[int, int], float] = field(default_factory=dict)
    claims: dict[tuple[int, int], int] = field(default_factory=dict)
    jobs_per_s: dict[int, float] = field(default_factory=dict)
    jobs: dict[int, int] = field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def stores(self, count: int) -> AsyncIterator[list[JobStore]]:
        """`count` job stores, each with its own connections (a process of its own)."""
        engines = [open_engine(self.url) for _ in range(count)]
        try:
            yield [JobStore(session_factory(engine)) for engine in engines]
        finally:
            await asyncio.gather(*(engine.dispose() for engine in engines))

    async def fill(self, queued: int, people: list[int]) -> None:
        """Queue jobs (as intake writes them, the members first) until `queued` wait."""
        engine = open_engine(self.url)
        try:
            sessions = session_factory(engine)
            async with sessions.begin() as session:
                for user in people:
                    await upsert_user(session, user, f"member{user % 1000}")
            store = JobStore(sessions)
            missing = queued - await store.waiting_count()
            while missing > 0:
                chunk = min(missing, FILL_CHUNK)
                new = []
                for number in range(chunk):
                    user = people[number % len(people)]
                    spec = job_spec(f"a quiet harbour, take {number}", number)
                    requester = Requester(user, f"member{user % 1000}")
                    new.append(NewJob(new_id(), requester, spec, spec.model, spec.seeds))
                await store.create_many(new)
                missing -= chunk
        finally:
            await engine.dispose()

    async def measure_claims(self, workers: int, images: int, seconds: float) -> None:
        claims, claimed, elapsed = await asyncio.to_thread(
            claim_in_processes, self.url, workers, images, seconds
        )
        self.claims[workers, images] = claims
        self.claims_per_s[workers, images] = claims / elapsed
        self.claimed_per_s[workers, images] = claimed / elapsed

    async def measure_jobs(self, workers: int, seconds: float) -> None:
        finishes = Finishes()
        async with self.stores(workers) as stores:
            pools = []
            for index, store in enumerate(stores):
                events = JobEvents()
                events.add(finishes)
                pool = WorkerPool(
                    store=store,
                    events=events,
                    fair=FairQueue(FAIR_WINDOW, 1.0),
                    engines=[InstantEngine(f"gpu{index}")],
                    data_dir=self.folder / "data",
                    job_timeout=60.0,
                )
                await pool.start()
                pools.append(pool)
            started = time.perf_counter()
            for pool in pools:
                pool.start_workers()
            await asyncio.sleep(seconds)
            done = len(finishes.ended)
            elapsed = time.perf_counter() - started
            await asyncio.gather(*(pool.stop(grace=5.0) for pool in pools))
        self.jobs[workers] = done
        self.jobs_per_s[workers] = done / elapsed

    def overhead_ms(self, workers: int) -> float | None:
        """Seconds a worker spends on each job, its engine's compute aside."""
        per_s = self.jobs_per_s.get(workers)
        return 1000.0 * workers / per_s if per_s else None


# How long a claimer process may take to start (imports, a first connection).
START_SECONDS = 120.0


def claim_in_processes(
    url: str, workers: int, images: int, seconds: float
) -> tuple[int, int, float]:
    """Claims and jobs claimed by `workers` processes claiming batches of up to `images`
    images at once for `seconds`, and the longest time any of them claimed."""
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(workers + 1)
    counts: Queue[tuple[int, int, float]] = context.Queue()
    processes = [
        context.Process(target=claimer_process, args=(url, images, seconds, start, counts))
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    try:
        start.wait(timeout=START_SECONDS)  # every claimer connected: all begin now
        results = [counts.get(timeout=seconds + START_SECONDS) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=START_SECONDS)
            if process.is_alive():
                process.kill()
    return (
        sum(claims for claims, _, _ in results),
        sum(claimed for _, claimed, _ in results),
        max(took for _, _, took in results),
    )


def claimer_process(
    url: str, images: int, seconds: float, start: Barrier, counts: Queue[tuple[int, int, float]]
) -> None:
    """One claimer process: connect, wait for the others, claim for `seconds`."""
    counts.put(asyncio.run(_claim_for(url, images, seconds, start)))


async def _claim_for(
    url: str, images: int, seconds: float, start: Barrier
) -> tuple[int, int, float]:
    fair = FairQueue(FAIR_WINDOW, 1.0)
    holds = EngineView(frozenset({MODEL}), frozenset(), timedelta(0))

    def choose(rows: Sequence[QueuedRow], served: dict[int, float]) -> list[str] | None:
        return fair.choose(rows, served, holds, images)

    engine = open_engine(url)
    try:
        store = JobStore(session_factory(engine))
        await store.waiting_count()  # the connection opened before the clock starts
        await asyncio.to_thread(start.wait, START_SECONDS)
        started = time.perf_counter()
        deadline = started + seconds
        claims = claimed = 0
        while time.perf_counter() < deadline:
            if batch := await store.claim("gpu", choose, FAIR_WINDOW, lease=LONG_LEASE):
                claims += 1
                claimed += len(batch)
        return claims, claimed, time.perf_counter() - started
    finally:
        await engine.dispose()


async def measure(
    folder: Path,
    postgres_url: str,
    queued: int,
    seconds: float,
    workers: Sequence[int] = WORKERS,
) -> tuple[Database, Database]:
    """Both databases measured, alternating, with `queued` jobs waiting at each start."""
    sqlite = Database("SQLite", f"sqlite+aiosqlite:///{folder / 'queue.db'}", folder / "sqlite")
    postgres = Database("PostgreSQL", postgres_url, folder / "postgresql")
    both = (sqlite, postgres)
    people = members(100)
    for database in both:
        await asyncio.to_thread(upgrade, database.url)
    for count in workers:
        for images in CLAIM_IMAGES:
            for database in both:
                await database.fill(queued, people)
                say(f"scale: {database.name}, {count} claimers of {images} for {seconds:g} s")
                await database.measure_claims(count, images, seconds)
        for database in both:
            await database.fill(queued, people)
            say(f"scale: {database.name}, {count} worker pools for {seconds:g} s")
            await database.measure_jobs(count, seconds)
    return sqlite, postgres


def report(section: Section, sqlite: Database, postgres: Database, queued: int) -> None:
    for count, images in sqlite.claims_per_s:
        key = count, images
        lowest = min(sqlite.claimed_per_s[key], postgres.claimed_per_s[key])
        batched = f", batches of up to {images} images" if images > 1 else ""
        section.add(
            Figure(
                name=f"claims, {count} worker{'s' if count > 1 else ''}{batched}",
                ratio=ratio(postgres.claimed_per_s[key], sqlite.claimed_per_s[key]),
                ratio_means="PostgreSQL jobs claimed/s / SQLite jobs claimed/s",
                values={
                    "sqlite_claims_per_s": round(sqlite.claims_per_s[key], 1),
                    "postgresql_claims_per_s": round(postgres.claims_per_s[key], 1),
                    "sqlite_jobs_claimed_per_s": round(sqlite.claimed_per_s[key], 1),
                    "postgresql_jobs_claimed_per_s": round(postgres.claimed_per_s[key], 1),
                    "sqlite_claims": sqlite.claims[key],
                    "postgresql_claims": postgres.claims[key],
                },
                target=f">= {CLAIMS_TARGET:g} jobs claimed/s on both (not the bottleneck)",
                met=lowest >= CLAIMS_TARGET,
            )
        )
    for count in sqlite.jobs_per_s:
        sqlite_ms, postgres_ms = sqlite.overhead_ms(count), postgres.overhead_ms(count)
        slower = None if sqlite_ms is None or postgres_ms is None else postgres_ms / sqlite_ms
        section.add(
            Figure(
                name=f"overhead per job, {count} worker{'s' if count > 1 else ''}",
                ratio=slower,
                ratio_means="PostgreSQL ms per job / SQLite ms per job",
                values={
                    "sqlite_ms_per_job": None if sqlite_ms is None else round(sqlite_ms, 1),
                    "postgresql_ms_per_job": None if postgres_ms is None else round(postgres_ms, 1),
                    "sqlite_jobs_per_s": round(sqlite.jobs_per_s[count], 1),
                    "postgresql_jobs_per_s": round(postgres.jobs_per_s[count], 1),
                },
                target=f"PostgreSQL <= {OVERHEAD_LIMIT:g}x SQLite",
                met=None if slower is None else slower <= OVERHEAD_LIMIT,
            )
        )
    section.notes.append(
        f"{queued:,} jobs from 100 members waiting at the start of each measurement;"
        " claims: each worker a process of its own, all claiming at once with the worker"
        " pool's chooser, one job per claim (batching off) and batches of up to"
        f" {CUDA_BATCH_IMAGES} images (the CUDA default; the jobs are all alike, so the most"
        " batching gives) (on this"
        f" machine's {os.cpu_count()} cores, which the database server shares); jobs: every"
        " worker with its own connections and worker id, all in this one process (one"
        " event loop), so on PostgreSQL the claims' row locks and on SQLite its one"
        " writer are shared as by separate processes; PostgreSQL with fsync off (a"
        " throwaway server, as the tests run it); the engine answers at once, so"
        " overhead per job = workers x seconds / jobs finished"
    )


async def run(ctx: Context, section: Section) -> None:
    sizes = ctx.sizes
    folder = ctx.folder("scale")
    say("scale: starting a throwaway PostgreSQL server")
    with postgres_server() as server, server.database() as url:
        sqlite, postgres = await measure(folder, url, sizes.scale_jobs, sizes.scale_seconds)
    report(section, sqlite, postgres, sizes.scale_jobs)
