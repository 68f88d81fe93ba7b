"""Claims under leases, on SQLite and PostgreSQL: a claim names its worker and holds the
job for a lease its heartbeat renews; the reaper (any process) returns only expired
leases, counting the attempt; a worker that lost a lease records nothing; a worker claims
only the models it serves, and keeps to its loaded model until another waited long."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import update

from bot.jobs.scheduler import Waiting, keeping_loaded
from bot.jobs.spec import Options, build_spec
from bot.store.jobs import LeaseLost, QueuedRow, Requester
from bot.store.models import Job, JobState, Lane, Reservation, UsageEntry, utcnow
from tests.databases import Database
from tests.stores import Stores, another_process, open_stores, output, service_on, spec

from .conftest import Recorder

ALICE = Requester(user_id=1, user_name="alice", guild_id=1, channel_id=2)
QUOTA = "[billing]\nprice_per_gpu_hour = 3.6\n[quota]\nimages_per_day = 50\n"
WINDOW = timedelta(hours=1)
LEASE = timedelta(seconds=30)
# A claim whose worker died at once: its lease has run out when the reaper looks.
DEAD = timedelta(0)


def first(rows: list[QueuedRow], served: dict[int, float]) -> list[str]:
    return [rows[0].job_id]


async def queue(stores: Stores, *job_ids: str, model: str = "tiny") -> None:
    """Admit each job with its quota reservation, as intake does."""
    for job_id in job_ids:
        await stores.quotas.admit(job_id, ALICE, spec(), model, [1])


async def test_a_claim_names_its_worker_and_holds_the_job_for_the_lease(
    tmp_path: Path, database: Database
) -> None:
    async with open_stores(tmp_path, QUOTA, database=database) as stores:
        await queue(stores, "job")
        before = utcnow()
        (job,) = await stores.jobs.claim("cuda:0", first, WINDOW, lease=LEASE)
        stored = await stores.jobs.get("job")
        assert job.claimed_by == stored.claimed_by == stores.jobs.worker_id
        assert stored.lease_until is not None
        assert before + LEASE <= stored.lease_until <= utcnow() + LEASE
        # host:pid:random, so two processes on one host, or a pid come round, differ.
        async with another_process(stores) as other:
            assert other.worker_id != stores.jobs.worker_id
        assert stores.jobs.worker_id.split(":")[1].isdigit()


async def test_the_heartbeat_renews_only_the_leases_this_worker_holds(
    tmp_path: Path, database: Database
) -> None:
    async with (
        open_stores(tmp_path, QUOTA, database=database) as stores,
        another_process(stores) as other,
    ):
        await queue(stores, "mine", "theirs")
        await stores.jobs.claim("cuda:0", first, WINDOW, lease=LEASE)
        await other.claim("cuda:0", first, WINDOW, lease=LEASE)
        renewed = await stores.jobs.renew_leases({"mine", "theirs"}, timedelta(minutes=5))
        assert renewed == {"mine"}
        mine, theirs = await stores.jobs.get("mine"), await stores.jobs.get("theirs")
        assert mine.lease_until is not None and theirs.lease_until is not None
        assert mine.lease_until > utcnow() + timedelta(minutes=4)
        assert theirs.lease_until <= utcnow() + LEASE


async def test_the_reaper_requeues_only_expired_leases_and_counts_the_attempt(
    tmp_path: Path, database: Database
) -> None:
    async with (
        open_stores(tmp_path, QUOTA, database=database) as stores,
        another_process(stores) as dead_worker,
        another_process(stores) as reaper,
    ):
        await queue(stores, "dead", "live")
        await dead_worker.claim("cuda:0", first, WINDOW, lease=DEAD)
        await stores.jobs.claim("cuda:0", first, WINDOW, lease=LEASE)
        live_before = await stores.jobs.get("live")

        (reaped,) = await reaper.reap_expired()

        assert reaped.id == "dead"
        dead = await stores.jobs.get("dead")
        assert (dead.state, dead.attempts, dead.claimed_by, dead.lease_until) == (
            JobState.QUEUED,
            1,
            None,
            None,
        )
        live = await stores.jobs.get("live")  # another worker's live lease: untouched
        assert (live.state, live.claimed_by, live.lease_until) == (
            JobState.RUNNING,
            stores.jobs.worker_id,
            live_before.lease_until,
        )
        requeued = (await stores.jobs.audit_trail("dead"))[-1]
        assert (requeued.action, requeued.outcome) == ("job.queued", "requeued")
        assert dead_worker.worker_id in requeued.params["error"]
        assert await reaper.reap_expired() == []  # nothing more to do: idempotent


async def test_two_reapers_at_once_return_an_expired_job_once(
    tmp_path: Path, database: Database
) -> None:
    async with (
        open_stores(tmp_path, QUOTA, database=database) as stores,
        another_process(stores) as one,
        another_process(stores) as two,
    ):
        await queue(stores, "job")
        await stores.jobs.claim("cuda:0", first, WINDOW, lease=DEAD)
        reaped = await asyncio.gather(one.reap_expired(), two.reap_expired())
        assert sorted(len(jobs) for jobs in reaped) == [0, 1]
        trail = await stores.jobs.audit_trail("job")
        assert [e.outcome for e in trail if e.action == "job.queued"] == ["ok", "requeued"]


async def test_the_reaper_fails_and_refunds_a_job_at_its_last_attempt(
    tmp_path: Path, database: Database
) -> None:
    async with open_stores(tmp_path, QUOTA, database=database) as stores:
        await queue(stores, "job")
        assert await stores.count(Reservation) == 1
        for _ in range(2):
            await stores.jobs.claim("cuda:0", first, WINDOW, lease=DEAD)
            (reaped,) = await stores.jobs.reap_expired()
        assert reaped.state is JobState.FAILED
        assert "its worker" in (reaped.error or "") and "2 times; not retried" in reaped.error
        assert await stores.count(Reservation) == 0  # refunded
        assert await stores.count(UsageEntry) == 0


async def test_a_worker_that_lost_its_lease_records_nothing_and_charges_nothing(
    tmp_path: Path, database: Database
) -> None:
    async with (
        open_stores(tmp_path, QUOTA, database=database) as stores,
        another_process(stores) as second,
    ):
        first_worker = stores.jobs
        await queue(stores, "job")
        await first_worker.claim("cuda:0", first, WINDOW, lease=DEAD)
        await second.reap_expired()
        # Reaped and waiting: the first worker's result is refused, held by nobody.
        try:
            await first_worker.succeed("job", 2.0, [output("job", 0)])
        except LeaseLost as lost:
            assert (lost.found, lost.holder) == (JobState.QUEUED, None)
        else:
            raise AssertionError("a reaped job's result was recorded")
        # Claimed again elsewhere: every end the first worker tries is refused.
        await second.claim("cuda:1", first, WINDOW, lease=LEASE)
        for end in (
            first_worker.succeed("job", 2.0, [output("job", 0)]),
            first_worker.retry_or_fail("job", "the engine died"),
            first_worker.cancel_started("job", 1.0, None, "cancelled"),
            first_worker.return_to_queue("job"),
            first_worker.transition("job", JobState.RUNNING, JobState.FAILED, error="oops"),
        ):
            try:
                await end
            except LeaseLost as lost:
                assert (lost.found, lost.holder) == (JobState.RUNNING, second.worker_id)
            else:
                raise AssertionError("a job held by another worker was moved")
        assert await stores.count(UsageEntry) == 0
        # The worker that holds it records its result, charged once.
        done = await second.succeed("job", 2.0, [output("job", 0)])
        assert (done.state, done.claimed_by) == (JobState.SUCCEEDED, second.worker_id)
        assert await stores.count(UsageEntry) == 1


async def test_a_worker_claims_only_the_jobs_of_the_models_it_serves(
    tmp_path: Path, database: Database
) -> None:
    async with open_stores(tmp_path, QUOTA, database=database) as stores:
        await queue(stores, "fox")
        await queue(stores, "owl", model="other")
        claim = stores.jobs.claim
        (owl,) = await claim("cuda:0", first, WINDOW, models={"other"})
        assert owl.id == "owl"  # the older fox is another model's: not this worker's
        assert await claim("cuda:0", first, WINDOW, models={"other"}) == []
        (fox,) = await claim("cuda:0", first, WINDOW, models={"tiny", "other"})
        assert fox.id == "fox"


async def test_a_start_leaves_another_workers_running_job_alone(
    tmp_path: Path, database: Database
) -> None:
    async with (
        open_stores(tmp_path, QUOTA, database=database) as stores,
        another_process(stores) as other,
    ):
        await queue(stores, "elsewhere", "dead")
        await other.claim("cuda:0", first, WINDOW, lease=timedelta(minutes=5))
        await other.claim("cuda:0", first, WINDOW, lease=DEAD)
        service = service_on(stores)
        await service.start()  # a front door or worker (re)starting beside `other`
        try:
            elsewhere = await stores.jobs.get("elsewhere")
            assert (elsewhere.state, elsewhere.claimed_by, elsewhere.attempts) == (
                JobState.RUNNING,
                other.worker_id,
                1,
            )
            dead = await stores.jobs.get("dead")  # a killed worker's: back, counted
            assert (dead.state, dead.attempts) == (JobState.QUEUED, 1)
        finally:
            await service.stop()


async def test_a_result_whose_lease_was_lost_is_discarded_and_the_job_runs_again(
    tmp_path: Path, tiny_model_dir: Path, database: Database
) -> None:
    async with (
        open_stores(tmp_path, QUOTA, tiny_model_dir, database) as stores,
        another_process(stores) as reaper,
    ):
        service, recorder = service_on(stores), Recorder()
        service.add_listener(recorder)
        await service.start()
        service.start_workers()
        try:
            options = Options(prompt="a lost claim", seed=3, steps=30)
            submitted = await service.submit(
                build_spec(options, stores.config.models, "tiny"), ALICE
            )
            job_id = submitted.job.id
            await recorder.wait_progress(job_id)
            # The pool stalls past its lease (as a host cut off from the database would):
            # another process's reaper takes the job back while the engine still runs it.
            async with stores.sessions.begin() as session:
                past = utcnow() - timedelta(seconds=1)
                await session.execute(update(Job).where(Job.id == job_id).values(lease_until=past))
            (reaped,) = await reaper.reap_expired()
            assert reaped.state is JobState.QUEUED
            await recorder.wait_finished(1)
        finally:
            await service.stop()
        job = await stores.jobs.get(job_id)
        # The first run's result was discarded; the job ran again, and was charged once.
        assert (job.state, job.attempts) == (JobState.SUCCEEDED, 2)
        assert list(recorder.finished) == [job_id]
        trail = await stores.jobs.audit_trail(job_id)
        discarded = [e for e in trail if e.action == "job.result_discarded"]
        assert [(e.outcome, e.params["outcome"], e.params["worker"]) for e in discarded] == [
            ("refused", "succeeded", stores.jobs.worker_id)
        ]
        assert [e.action for e in trail].count("job.succeeded") == 1
        assert await stores.count(UsageEntry) == 1


def waiting(job_id: str, model: str, queued_at: datetime) -> Waiting:
    return Waiting(job_id, 1, model, Lane.NORMAL, queued_at, 1, 10.0, model)


NOW = datetime(2026, 1, 1, 12, 0)
SWITCH = timedelta(minutes=2)


def test_an_engine_keeps_to_its_loaded_model_while_anothers_jobs_are_young() -> None:
    order = [waiting("sdxl", "sdxl", NOW - timedelta(minutes=1)), waiting("sd", "sd", NOW)]
    assert [w.job_id for w in keeping_loaded(order, {"sd"}, NOW, SWITCH)] == ["sd"]


def test_another_models_job_is_taken_once_its_oldest_waited_the_switch_time() -> None:
    order = [
        waiting("sdxl-old", "sdxl", NOW - timedelta(minutes=3)),
        waiting("sd", "sd", NOW - timedelta(minutes=5)),
        waiting("sdxl-new", "sdxl", NOW),
    ]
    kept = keeping_loaded(order, {"sd"}, NOW, SWITCH)
    assert [w.job_id for w in kept] == ["sdxl-old", "sd", "sdxl-new"]


def test_an_engine_with_none_of_its_models_waiting_takes_any_job() -> None:
    order = [waiting("sdxl", "sdxl", NOW)]
    assert keeping_loaded(order, {"sd"}, NOW, SWITCH) == order
    assert keeping_loaded(order, set(), NOW, SWITCH) == order


def test_no_switch_time_keeps_the_fair_order() -> None:
    order = [waiting("sdxl", "sdxl", NOW), waiting("sd", "sd", NOW)]
    assert keeping_loaded(order, {"sd"}, NOW, timedelta(0)) == order
