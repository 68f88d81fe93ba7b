"""The job service with quotas over a real engine: measured GPU time is charged."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.jobs.spec import Options, build_spec
from bot.store.jobs import Requester
from bot.store.models import JobState, Lane, Reservation, UsageEntry
from tests.held import HeldSuccess
from tests.stores import open_stores, service_on

from .conftest import Recorder

FERN = Requester(user_id=666, user_name="fern", guild_id=1, channel_id=2)
QUOTA = """[billing]
price_per_gpu_hour = 3.6
[quota]
images_per_day = 2
over_quota = "relax"
"""


async def test_jobs_settle_their_measured_gpu_time_and_over_quota_ones_run_relaxed(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    async with open_stores(tmp_path, QUOTA, tiny_model_dir) as stores:
        config = stores.config
        service = service_on(stores)
        recorder = Recorder()
        service.add_listener(recorder)
        spec = build_spec(Options(prompt="a green hill", seed=5, count=2), config.models, "tiny")
        await service.start()
        service.start_workers()
        try:
            in_quota = await service.submit(spec, FERN)
            relaxed = await service.submit(spec, FERN)
            assert (in_quota.lane, relaxed.lane) == (Lane.NORMAL, Lane.RELAX)
            await recorder.wait_finished(2)
        finally:
            await service.stop()

        jobs = [await stores.jobs.get(s.job.id) for s in (in_quota, relaxed)]
        assert [job.state for job in jobs] == [JobState.SUCCEEDED, JobState.SUCCEEDED]
        async with stores.sessions() as session:
            ledger = (await session.scalars(select(UsageEntry).order_by(UsageEntry.id))).all()
        assert [(e.job_id, e.lane, e.images) for e in ledger] == [
            (jobs[0].id, Lane.NORMAL, 2),
            (jobs[1].id, Lane.RELAX, 2),
        ]
        for entry, job in zip(ledger, jobs, strict=True):
            assert job.gpu_seconds is not None and job.gpu_seconds > 0
            assert entry.gpu_seconds == job.gpu_seconds
            assert entry.cost == pytest.approx(job.gpu_seconds / 1000)
        assert await stores.count(Reservation) == 0


async def test_a_graceful_stop_mid_job_requeues_it_uncounted_however_often_and_it_runs_once(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    async with open_stores(tmp_path, QUOTA, tiny_model_dir) as stores:
        spec = build_spec(
            Options(prompt="a long night", seed=4, steps=12), stores.config.models, "tiny"
        )
        job_id = ""
        for _ in range(3):  # three restarts in a row, each cutting the job off mid-run
            service, recorder = service_on(stores), Recorder()
            service.add_listener(recorder)
            await service.start()
            service.start_workers()
            try:
                job_id = job_id or (await service.submit(spec, FERN)).job.id
                await recorder.wait_progress(job_id)
            finally:
                await service.stop(grace=0)
            job = await stores.jobs.get(job_id)
            assert (job.state, job.attempts) == (JobState.QUEUED, 0)
            assert recorder.finished == {}

        service, recorder = service_on(stores), Recorder()
        service.add_listener(recorder)
        await service.start()
        service.start_workers()
        try:
            await recorder.wait_finished(1)
        finally:
            await service.stop()

        job = await stores.jobs.get(job_id)
        assert (job.state, job.attempts, len(job.outputs)) == (JobState.SUCCEEDED, 1, 1)
        outcomes = [(e.action, e.outcome) for e in await stores.jobs.audit_trail(job_id)]
        assert outcomes.count(("job.queued", "requeued")) == 3
        assert outcomes.count(("quota.settle", "ok")) == 1
        assert await stores.count(UsageEntry, UsageEntry.job_id == job_id) == 1
        assert await stores.count(Reservation) == 0


async def test_a_cancel_racing_the_finish_says_the_job_finished_and_it_is_charged_once(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    async with open_stores(tmp_path, QUOTA, tiny_model_dir) as stores:
        store = HeldSuccess(stores.sessions, stores.quotas.rules.pricing)
        service = service_on(stores, store)
        spec = build_spec(Options(prompt="a quick one", seed=6), stores.config.models, "tiny")
        await service.start()
        service.start_workers()
        try:
            job_id = (await service.submit(spec, FERN)).job.id
            await store.held.wait()  # the engine's result is in; the job is still running
            cancelling = asyncio.create_task(service.cancel_and_wait(job_id, FERN.user_id))
            done, _ = await asyncio.wait({cancelling}, timeout=1)
            assert not done  # the answer waits for the job's end
            store.release.set()
            outcome = await cancelling
        finally:
            await service.stop()

        assert outcome.too_late and outcome.job.state is JobState.SUCCEEDED
        job = await stores.jobs.get(job_id)
        assert (job.state, len(job.outputs)) == (JobState.SUCCEEDED, 1)
        assert await stores.count(UsageEntry, UsageEntry.job_id == job_id) == 1
        assert await stores.count(Reservation) == 0


async def test_a_job_cancelled_mid_run_is_charged_the_gpu_time_it_used_one_not_started_nothing(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    async with open_stores(tmp_path, QUOTA, tiny_model_dir) as stores:
        service, recorder = service_on(stores), Recorder()
        service.add_listener(recorder)
        models = stores.config.models
        long = build_spec(Options(prompt="a long road", seed=1, steps=150), models, "tiny")
        await service.start()
        service.start_workers()
        try:
            started = await service.submit(long, FERN)
            waiting = await service.submit(build_spec(Options(prompt="next"), models, "tiny"), FERN)
            await recorder.wait_progress(started.job.id)
            before = await service.cancel_and_wait(waiting.job.id, FERN.user_id)
            during = await service.cancel_and_wait(started.job.id, FERN.user_id)
        finally:
            await service.stop()

        assert before.job.state is during.job.state is JobState.CANCELLED
        assert not (before.too_late or during.too_late)
        ran = await stores.jobs.get(started.job.id)
        assert ran.gpu_seconds is not None and ran.gpu_seconds > 0
        async with stores.sessions() as session:
            ledger = (await session.scalars(select(UsageEntry))).all()
        # The job that ran is charged what it used, without images; the other nothing.
        assert [(e.job_id, e.images, e.gpu_seconds) for e in ledger] == [
            (ran.id, 0, ran.gpu_seconds)
        ]
        assert ledger[0].cost == pytest.approx(ran.gpu_seconds / 1000)
        assert await stores.count(Reservation) == 0
        refunds = [e.action for e in await stores.jobs.audit_trail(waiting.job.id)]
        assert "quota.refund" in refunds and "quota.settle" not in refunds
