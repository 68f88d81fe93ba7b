"""A cancel made by another process: only the job's row says so (a second store on the
same database, no call into the pool), and the pool holding the job stops it through its
engine, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.jobs import pool
from bot.jobs.pool import CANCEL_POLL_SECONDS
from bot.jobs.spec import JobSpec, Options, build_spec
from bot.store.jobs import JobStore, Requester
from bot.store.ledger import Pricing
from bot.store.models import Job, JobState, Reservation, UsageEntry
from tests.databases import Database
from tests.stores import Stores, another_process, open_stores, service_on

from .conftest import Recorder

FERN = Requester(user_id=666, user_name="fern", guild_id=1, channel_id=2)
ADMIN_ID = 9
QUOTA = "[billing]\nprice_per_gpu_hour = 3.6\n[quota]\nimages_per_day = 5\n"
# Far more work (the most steps, four images) than the tiny model does before a stop
# arrives.
STEPS = 150
IMAGES = 4


def in_order(trail: list[tuple[str, str, int | None]], *entries: tuple[str, str, int]) -> bool:
    """Whether `entries` are in `trail` in this order (others may come between)."""
    rest = iter(trail)
    return all(entry in rest for entry in entries)


def long_job(stores: Stores, seed: int) -> JobSpec:
    """Far more work than the tiny model does before a stop arrives."""
    options = Options(prompt="a long road", seed=seed, steps=STEPS, count=IMAGES)
    return build_spec(options, stores.config.models, "tiny")


async def cancelled_from_elsewhere(
    stores: Stores, elsewhere: JobStore, seed: int, actor_id: int, *, refund: bool
) -> tuple[str, float]:
    """Run a long job in a pool of this process and ask `elsewhere` to cancel it once it is
    on the engine: the job's id, and the seconds from the request to its end."""
    service, recorder = service_on(stores), Recorder()
    service.add_listener(recorder)
    await service.start()
    service.start_workers()
    try:
        job_id = (await service.submit(long_job(stores, seed), FERN)).job.id
        await recorder.wait_progress(job_id)
        asked = time.monotonic()
        assert await elsewhere.request_cancel(job_id, actor_id, refund=refund)
        await recorder.wait_finished(1)
        return job_id, time.monotonic() - asked
    finally:
        await service.stop()


class AskedToStopAtClaim(JobStore):
    """Each claimed job is asked to stop by `elsewhere` the moment it is claimed: before
    its worker has sent it to the engine."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], pricing: Pricing, elsewhere: JobStore
    ) -> None:
        super().__init__(sessions, pricing)
        self.elsewhere = elsewhere

    async def claim(self, *args: Any, **kwargs: Any) -> list[Job]:
        jobs = await super().claim(*args, **kwargs)
        for job in jobs:
            assert await self.elsewhere.request_cancel(job.id, ADMIN_ID, refund=False)
        return jobs


async def test_a_cancel_requested_by_another_process_stops_the_running_job_at_once(
    tmp_path: Path, tiny_model_dir: Path, database: Database
) -> None:
    async with (
        open_stores(tmp_path, QUOTA, tiny_model_dir, database) as stores,
        another_process(stores) as elsewhere,
    ):
        job_id, took = await cancelled_from_elsewhere(
            stores, elsewhere, 1, FERN.user_id, refund=False
        )

        job = await stores.jobs.get(job_id)
        assert job.state is JobState.CANCELLED and job.error is not None
        assert job.error.startswith("cancelled at step") and job.error.endswith(f"of {STEPS}")
        # Heard at the pool's next poll, not after the job's 400 steps.
        assert took < CANCEL_POLL_SECONDS + 3, took
        # Charged the GPU time it used, as a cancel made in the pool's own process is.
        assert job.gpu_seconds is not None and job.gpu_seconds > 0
        async with stores.sessions() as session:
            ledger = (await session.scalars(select(UsageEntry))).all()
        assert [(e.job_id, e.images, e.gpu_seconds) for e in ledger] == [
            (job_id, 0, job.gpu_seconds)
        ]
        assert await stores.count(Reservation) == 0
        trail = [(e.action, e.outcome, e.actor_id) for e in await stores.jobs.audit_trail(job_id)]
        assert in_order(
            trail,
            ("job.cancel_requested", "ok", FERN.user_id),
            ("job.cancelled", "cancelled", FERN.user_id),
            ("quota.settle", "ok", FERN.user_id),
        )


async def test_a_job_asked_to_stop_before_its_engine_got_it_never_runs_and_is_refunded(
    tmp_path: Path, tiny_model_dir: Path, database: Database
) -> None:
    async with (
        open_stores(tmp_path, QUOTA, tiny_model_dir, database) as stores,
        another_process(stores) as elsewhere,
    ):
        store = AskedToStopAtClaim(stores.sessions, stores.quotas.rules.pricing, elsewhere)
        service, recorder = service_on(stores, store), Recorder()
        service.add_listener(recorder)
        spec = build_spec(Options(prompt="a short walk", seed=2), stores.config.models, "tiny")
        await service.start()
        service.start_workers()
        try:
            job_id = (await service.submit(spec, FERN)).job.id
            await recorder.wait_finished(1)
        finally:
            await service.stop()

        job = await stores.jobs.get(job_id)
        assert (job.state, job.gpu_seconds, job.outputs) == (JobState.CANCELLED, None, [])
        assert recorder.progress == {}  # the engine never ran it
        assert await stores.count(UsageEntry) == 0
        assert await stores.count(Reservation) == 0
        trail = [(e.action, e.outcome, e.actor_id) for e in await stores.jobs.audit_trail(job_id)]
        assert in_order(
            trail,
            ("job.cancel_requested", "ok", ADMIN_ID),
            ("job.cancelled", "cancelled", ADMIN_ID),
            ("quota.refund", "ok", FERN.user_id),
        )


@pytest.mark.postgresql_only
async def test_on_postgresql_the_pool_hears_a_remote_cancel_without_waiting_for_its_poll(
    tmp_path: Path, tiny_model_dir: Path, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pool, "CANCEL_POLL_SECONDS", 600.0)  # only the notification is left
    async with (
        open_stores(tmp_path, QUOTA, tiny_model_dir, database) as stores,
        another_process(stores) as elsewhere,
    ):
        job_id, took = await cancelled_from_elsewhere(stores, elsewhere, 3, ADMIN_ID, refund=True)

        job = await stores.jobs.get(job_id)
        assert job.state is JobState.CANCELLED and took < 3, (job.state, took)
        # The bot stopped it (refund): nothing is charged, though it ran.
        assert job.gpu_seconds is not None and job.gpu_seconds > 0
        assert await stores.count(UsageEntry) == 0
        assert await stores.count(Reservation) == 0


async def test_a_job_asked_to_stop_that_a_stop_cuts_off_stays_cancelled_not_requeued(
    tmp_path: Path, tiny_model_dir: Path, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pool, "CANCEL_POLL_SECONDS", 600.0)  # the request waits in the row
    async with (
        open_stores(tmp_path, QUOTA, tiny_model_dir, database) as stores,
        another_process(stores) as elsewhere,
    ):
        service, recorder = service_on(stores), Recorder()
        service.add_listener(recorder)
        await service.start()
        service.start_workers()
        try:
            job_id = (await service.submit(long_job(stores, 4), FERN)).job.id
            await recorder.wait_progress(job_id)
            assert await elsewhere.request_cancel(job_id, FERN.user_id, refund=False)
        finally:
            await service.stop(grace=0)

        job = await stores.jobs.get(job_id)
        assert job.state is JobState.CANCELLED
        outcomes = [(e.action, e.outcome) for e in await stores.jobs.audit_trail(job_id)]
        assert ("job.queued", "requeued") not in outcomes
        assert await stores.count(Reservation) == 0
