"""Waits are shared by the engines working the queue on every host, counted from the
jobs' claims (on SQLite and PostgreSQL): an engine holding an unexpired lease or having
finished a job within LIVE_WINDOW counts, one whose lease ran out or that has been idle
longer does not; a pure front door (no engines of its own) counts only the workers'."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import timedelta

import pytest
from sqlalchemy import update

from bot.jobs.pace import LIVE_WINDOW
from bot.jobs.service import JobService
from bot.store.jobs import JobStore, QueuedRow, Requester
from bot.store.models import Job, utcnow
from tests.stores import Stores, another_process, output, service_on, spec

ALICE = Requester(user_id=1, user_name="alice", guild_id=1, channel_id=2)
QUOTA = "[billing]\nprice_per_gpu_hour = 3.6\n[quota]\nimages_per_day = 50\n"
WINDOW = timedelta(hours=1)
LEASE = timedelta(seconds=30)


def only(job_id: str) -> Callable[[Sequence[QueuedRow], dict[int, float]], list[str]]:
    return lambda rows, served: [job_id]


async def queue(stores: Stores, *job_ids: str) -> None:
    for job_id in job_ids:
        await stores.quotas.admit(job_id, ALICE, spec(), "tiny", [1])


async def run_on(worker: JobStore, stores: Stores, job_id: str, device: str) -> None:
    """Queue a job and let `worker` run it to its end on `device`."""
    await queue(stores, job_id)
    await worker.claim(device, only(job_id), WINDOW, lease=LEASE)
    await worker.succeed(job_id, 1.0, [output(job_id, 0)])


async def set_times(stores: Stores, job_id: str, **times: object) -> None:
    async with stores.sessions.begin() as session:
        await session.execute(update(Job).where(Job.id == job_id).values(**times))


def front_door(stores: Stores) -> JobService:
    """`atelier run` with `[engine] devices = []`: intake and no engine of its own."""
    config = stores.config
    return JobService(
        store=stores.jobs,
        data_dir=config.storage.data_dir,
        engines=[],
        job_timeout=config.engine.job_timeout,
        models=config.models,
        default_model="tiny",
        quotas=stores.quotas,
        queue=config.queue,
    )


async def test_a_wait_is_shared_by_the_local_engine_and_every_other_workers_engines(
    stores_with: Callable[[str], AbstractAsyncContextManager[Stores]],
) -> None:
    async with stores_with(QUOTA) as stores, another_process(stores) as worker:
        service = service_on(stores)  # one engine of its own, not started
        # Another host's worker with two GPUs, each of which finished a job just now.
        await run_on(worker, stores, "done0", "cuda:0")
        await run_on(worker, stores, "done1", "cuda:1")
        await queue(stores, "first", "second", "third")

        place = await service.intake.queue_place("third")

        assert place is not None and place.position == 3
        ahead = sum([await stores.jobs.reserved_seconds(j) or 0 for j in ("first", "second")])
        assert ahead > 0
        assert place.eta_seconds == pytest.approx(ahead / 3)


async def test_a_front_door_counts_only_workers_with_a_live_lease_or_a_recent_job(
    stores_with: Callable[[str], AbstractAsyncContextManager[Stores]],
) -> None:
    async with (
        stores_with(QUOTA) as stores,
        another_process(stores) as busy,
        another_process(stores) as dead,
        another_process(stores) as idle,
    ):
        intake = front_door(stores).intake
        assert await intake.live_engine_count() == 1  # nothing known: never divide by 0
        await queue(stores, "running0", "running1", "lost")
        await busy.claim("cuda:0", only("running0"), WINDOW, lease=LEASE)
        await busy.claim("cuda:1", only("running1"), WINDOW, lease=LEASE)
        # A worker killed mid-job: its lease ran out, the reaper has not looked yet.
        await dead.claim("cuda:0", only("lost"), WINDOW, lease=LEASE)
        await set_times(stores, "lost", lease_until=utcnow() - timedelta(seconds=1))
        # A worker whose last job ended before the window.
        await run_on(idle, stores, "old", "cuda:0")
        await set_times(stores, "old", finished_at=utcnow() - LIVE_WINDOW - timedelta(minutes=1))

        assert await stores.jobs.live_engines(LIVE_WINDOW) == {
            (busy.worker_id, "cuda:0"),
            (busy.worker_id, "cuda:1"),
        }
        assert await intake.live_engine_count() == 2

        await queue(stores, "first", "second")
        place = await intake.queue_place("second")
        assert place is not None
        ahead = await stores.jobs.reserved_seconds("first") or 0
        assert ahead > 0 and place.eta_seconds == pytest.approx(ahead / 2)
