"""Rounds of jobs through the real job service and engine process, queued all at once.

The bot's own parts, minus Discord: a migrated SQLite file, `QuotaStore.admit`
at the door, `JobService` workers claiming fair-order batches of up to
`max_batch_images` images, one `EngineProcess`. To queue a round "at once",
each service's store holds its worker at the claim (a gate) while the round is
submitted, then lets it go; the clock starts there. Several services (one per
batch setting) share the database and the one engine, and only one gate is
open at a time, so settings alternate round by round on the same warm engine.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from bot.config import QueueConfig
from bot.jobs.engine_client import EngineProcess
from bot.jobs.service import JobService
from bot.jobs.spec import JobSpec
from bot.quota import Limits
from bot.store.db import open_engine, session_factory
from bot.store.jobs import DEFAULT_LEASE, Chooser, JobStore, Requester
from bot.store.ledger import FREE
from bot.store.migrate import upgrade
from bot.store.models import Job, JobState
from bot.store.quotas import QuotaRules, QuotaStore
from engine.protocol import ModelSpec, Progress

from .history import members


async def start_quietly(engine: EngineProcess, log: Path) -> None:
    """Start the engine with its log lines going to `log`, not over the bench's output.

    The engine writes to the stderr it inherits, so fd 2 points at `log` while it
    is spawned (the bench writes nothing meanwhile).
    """
    saved = os.dup(2)
    with log.open("ab") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            await engine.start()
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class GatedJobStore(JobStore):
    """A JobStore whose claims wait for `gate`; `parked` says a worker is waiting there."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.gate = asyncio.Event()
        self.parked = asyncio.Event()

    async def claim(
        self,
        device: str,
        choose: Chooser,
        fair_window: timedelta,
        *,
        lease: timedelta = DEFAULT_LEASE,
        models: Collection[str] | None = None,
    ) -> list[Job]:
        if not self.gate.is_set():
            self.parked.set()
        await self.gate.wait()
        self.parked.clear()
        return await super().claim(device, choose, fair_window, lease=lease, models=models)


class Finishes:
    """A JobListener that notes when each job ended."""

    def __init__(self) -> None:
        self.ended: dict[str, tuple[float, JobState]] = {}
        self.changed = asyncio.Event()

    def job_started(self, job: Job) -> None:
        pass

    def job_progress(self, job_id: str, progress: Progress) -> None:
        pass

    def job_finished(self, job: Job) -> None:
        self.ended[job.id] = (time.monotonic(), job.state)
        self.changed.set()

    async def wait_for(self, job_ids: Sequence[str]) -> None:
        while not all(job_id in self.ended for job_id in job_ids):
            self.changed.clear()
            await self.changed.wait()


@dataclass
class Round:
    max_batch_images: int
    seconds: float  # from the gate opening to the last job's end
    latencies: dict[int, list[float]] = field(default_factory=dict)  # member -> job seconds
    images: int = 0

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds


@dataclass
class _Service:
    service: JobService
    store: GatedJobStore
    finishes: Finishes


async def run_rounds(
    directory: Path,
    engine: EngineProcess,
    model_name: str,
    model: ModelSpec,
    spec: Callable[[int], JobSpec],
    batch_settings: Sequence[int],
    rounds: int,
    jobs: int,
    member_count: int,
    job_timeout: float = 600.0,
) -> list[Round]:
    """`rounds` rounds of `jobs` jobs (`spec(i)`, member i % member_count) per setting of
    max_batch_images, settings alternating; after one warm-up job (not counted)."""
    url = f"sqlite+aiosqlite:///{directory / 'queue.db'}"
    await asyncio.to_thread(upgrade, url)
    database = open_engine(url)
    sessions = session_factory(database)
    rules = QuotaRules(Limits(), ZoneInfo("UTC"), False, FREE, 1.0)
    quotas = QuotaStore(sessions, rules)
    services: dict[int, _Service] = {}
    for setting in batch_settings:
        store = GatedJobStore(sessions, FREE)
        service = JobService(
            store=store,
            data_dir=directory / "data",
            engines=[engine],
            job_timeout=job_timeout,
            models={model_name: model},
            default_model=model_name,
            quotas=quotas,
            queue=QueueConfig(max_length=10_000),
            batch_images={engine.device: setting},
        )
        finishes = Finishes()
        service.add_listener(finishes)
        services[setting] = _Service(service, store, finishes)
    people = members(member_count)
    results: list[Round] = []
    try:
        if not engine.alive:  # before the workers, which would start it too
            await start_quietly(engine, directory / "engine.log")
        for entry in services.values():
            await entry.service.start()
            entry.service.start_workers()
        first = services[batch_settings[0]]
        await _round(first, [spec(0)], [people[0]], job_timeout)
        for number in range(rounds):
            order = batch_settings if number % 2 == 0 else list(reversed(batch_settings))
            for setting in order:
                specs = [spec(number * jobs + index) for index in range(jobs)]
                owners = [people[index % member_count] for index in range(jobs)]
                seconds, latencies = await _round(services[setting], specs, owners, job_timeout)
                results.append(
                    Round(setting, seconds, latencies, images=sum(s.count for s in specs))
                )
    finally:
        for entry in services.values():
            entry.store.gate.set()  # a parked worker must see the stop
            await entry.service.stop()
        await database.dispose()
    return results


async def _round(
    entry: _Service, specs: Sequence[JobSpec], owners: Sequence[int], limit: float
) -> tuple[float, dict[int, list[float]]]:
    # Parked since its last round (or its start): the worker waits at the gate.
    await asyncio.wait_for(entry.store.parked.wait(), 30)
    job_ids: list[str] = []
    for spec, owner in zip(specs, owners, strict=True):
        submitted = await entry.service.submit(spec, Requester(owner, f"member{owner % 1000}"))
        job_ids.append(submitted.job.id)
    opened = time.monotonic()
    entry.store.gate.set()
    async with asyncio.timeout(limit):
        await entry.finishes.wait_for(job_ids)
    # Closed again, and the worker back at the gate, before anything else is queued: a
    # claim it started meanwhile would take the next round's jobs, run them beside the
    # next service's on the one engine, and break both.
    entry.store.gate.clear()
    await asyncio.wait_for(entry.store.parked.wait(), 30)
    latencies: dict[int, list[float]] = {}
    for job_id, owner in zip(job_ids, owners, strict=True):
        ended, state = entry.finishes.ended[job_id]
        if state is not JobState.SUCCEEDED:
            raise RuntimeError(f"job {job_id} ended {state}")
        latencies.setdefault(owner, []).append(ended - opened)
    seconds = max(entry.finishes.ended[job_id][0] for job_id in job_ids) - opened
    return seconds, latencies
