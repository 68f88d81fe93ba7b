"""The job service over a real engine subprocess and a real SQLite file."""

from __future__ import annotations

from datetime import timedelta

from PIL import Image
from sqlalchemy import update

from bot.config import Config
from bot.jobs.spec import Options, build_spec
from bot.store.db import open_engine, session_factory
from bot.store.jobs import JobStore, Requester
from bot.store.models import Job, JobState, utcnow

from .conftest import Recorder, make_service

ALICE = Requester(user_id=111, user_name="alice", guild_id=1, channel_id=2)


async def test_jobs_run_in_order_and_are_recorded(config: Config, store: JobStore) -> None:
    service = make_service(config, store)
    recorder = Recorder()
    service.add_listener(recorder)
    first = build_spec(Options(prompt="a red cube", seed=7, count=2), config.models, "tiny")
    second = build_spec(Options(prompt="a blue ball", seed=9), config.models, "tiny")
    await service.start()
    service.start_workers()
    try:
        one = await service.submit(first, ALICE)
        two = await service.submit(second, ALICE)
        assert (one.queue_position, two.queue_position) in ((1, 2), (1, 1))
        await recorder.wait_finished(2)
    finally:
        await service.stop()

    assert recorder.started == [one.job.id, two.job.id]
    job = await store.get(one.job.id)
    assert job.state is JobState.SUCCEEDED
    assert job.gpu_seconds is not None and job.gpu_seconds > 0
    assert [output.seed for output in job.outputs] == [7, 8]
    for output in job.outputs:
        with Image.open(config.storage.data_dir / output.path) as image:
            assert image.size == (64, 64)
    steps = [p.step for p in recorder.progress[one.job.id]]
    assert steps[-1] == steps[0] + len(steps) - 1  # one event per step, in order

    actions = [entry.action for entry in await store.audit_trail(one.job.id)]
    assert actions == ["job.queued", "job.running", "job.succeeded"]


async def test_unfinished_jobs_survive_a_restart_and_run_once(
    config: Config, store: JobStore
) -> None:
    # The first "bot" queues a job and is stopped before any worker takes it.
    spec = build_spec(Options(prompt="a quiet lake", seed=3), config.models, "tiny")
    stopped = make_service(config, store)
    submitted = await stopped.submit(spec, ALICE)
    # A second job (another seed: not the first's twin) was mid-run when the process
    # died: its lease has run out.
    other_seed = build_spec(Options(prompt="a quiet lake", seed=4), config.models, "tiny")
    interrupted = await stopped.submit(other_seed, ALICE)
    await store.transition(interrupted.job.id, JobState.QUEUED, JobState.RUNNING, device="cpu")
    database = open_engine(config.database_url)
    async with session_factory(database).begin() as session:
        expired = utcnow() - timedelta(seconds=1)
        await session.execute(
            update(Job)
            .where(Job.id == interrupted.job.id)
            .values(claimed_by="gone:1:a", lease_until=expired)
        )
    await database.dispose()

    restarted = make_service(config, store)
    recorder = Recorder()
    restarted.add_listener(recorder)
    await restarted.start()
    restarted.start_workers()
    try:
        await recorder.wait_finished(2)
    finally:
        await restarted.stop()

    assert sorted(recorder.started) == sorted([submitted.job.id, interrupted.job.id])
    for job_id in (submitted.job.id, interrupted.job.id):
        job = await store.get(job_id)
        assert job.state is JobState.SUCCEEDED
        assert len(job.outputs) == 1
    assert await store.unfinished() == []


async def test_engine_faults_fail_only_their_jobs_and_the_service_keeps_serving(
    config: Config, store: JobStore
) -> None:
    faults = "crash_at_step=2@[crash];hang_at_step=1@[hang];oom_at_step=1@[oom];garbage@[noise]"
    quick = config.model_copy(
        # Long enough for a restarted engine's model load and a tiny job on a busy
        # machine, short for the hung job's two tries.
        update={"engine": config.engine.model_copy(update={"job_timeout": 8})}
    )
    service = make_service(quick, store, env={"ATELIER_ENGINE_FAULT": faults})
    recorder = Recorder()
    service.add_listener(recorder)
    prompts = ["[crash] a", "[hang] b", "[oom] c", "[noise] d", "e"]
    await service.start()
    service.start_workers()
    try:
        submitted = [
            await service.submit(
                build_spec(Options(prompt=p, seed=1), config.models, "tiny"), ALICE
            )
            for p in prompts
        ]
        await recorder.wait_finished(len(prompts))
    finally:
        await service.stop()

    jobs = [await store.get(s.job.id) for s in submitted]
    assert [job.state for job in jobs] == [JobState.FAILED] * 3 + [JobState.SUCCEEDED] * 2
    crashed, hung, out_of_memory = (job.error or "" for job in jobs[:3])
    # A job that takes the engine down is retried once, then failed.
    assert "exited" in crashed and "2 times; not retried" in crashed
    assert "longer than 8 s" in hung and "2 times; not retried" in hung
    assert "ran out of memory" in out_of_memory and "smaller size" in out_of_memory
    assert all(len(job.outputs) == 1 for job in jobs[3:])
