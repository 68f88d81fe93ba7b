"""The result cache through the core's door, on SQLite and PostgreSQL made by the
migrations (no engine runs: admitted jobs wait, and a finished job is written as the pool
would write it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.core.door import NO_INPUTS, Accepted, Origin
from bot.core.drafts import OptionsDraft
from bot.jobs.spec import Options
from bot.store.audit import Actor
from bot.store.jobs import Requester
from bot.store.models import AuditEntry, Job, JobState, Reservation, UsageEntry
from tests.bot.conftest import Recorder
from tests.bot.test_result_key import rewrite
from tests.buckets import Bucket
from tests.core.test_door import CONFIG, MEMBER, OTHER, World, world_of
from tests.databases import Database
from tests.stores import open_stores, output, service_on

# A cached answer, from the door's call to the written job, takes less than this.
CACHED_WITHIN = 0.3


@pytest.fixture
async def world(tmp_path: Path, tiny_model_dir: Path, database: Database) -> AsyncIterator[World]:
    async with open_stores(tmp_path, CONFIG, tiny_model_dir, database) as stores:
        world = world_of(stores, service_on(stores, cache=True))
        yield world
        await world.jobs.stop()


async def waiting_ids(world: World) -> list[str]:
    """The queued jobs a worker could claim."""
    rows, _ = await world.stores.jobs.waiting_snapshot(timedelta(hours=1))
    return [row.job_id for row in rows]


async def submitted(world: World, member: Requester = MEMBER, **options: object) -> Job:
    accepted = await world.submit(member, **options)
    assert isinstance(accepted, Accepted), accepted
    (queued,) = accepted.jobs
    return queued.job


async def test_a_repeat_is_answered_from_the_cache_free_and_audited(world: World) -> None:
    original = await world.stores.jobs.get(await world.finished_job(images=2))
    started = time.perf_counter()
    job = await submitted(world, count=2)
    elapsed = time.perf_counter() - started
    assert elapsed < CACHED_WITHIN
    assert (job.state, job.cached_from, job.gpu_seconds) == (JobState.SUCCEEDED, original.id, 0)
    stored = await world.stores.jobs.get(job.id)
    data_dir = world.stores.config.storage.data_dir
    assert [o.path for o in stored.outputs] == [f"images/{job.id}/{n}.png" for n in range(2)]
    for mine, theirs in zip(stored.outputs, original.outputs, strict=True):
        assert (data_dir / mine.path).read_bytes() == (data_dir / theirs.path).read_bytes()
        assert (mine.seed, mine.sha256) == (theirs.seed, theirs.sha256)
    # Charged nothing: no reservation held, nothing in the ledger.
    assert await world.stores.count(Reservation, Reservation.job_id == job.id) == 0
    assert await world.stores.count(UsageEntry, UsageEntry.job_id == job.id) == 0
    (cached,) = [e for e in await world.stores.jobs.audit_trail(job.id) if e.action == "job.cached"]
    assert cached.params["source"] == original.id
    assert await world.stores.count(AuditEntry, AuditEntry.action == "job.queued") == 1


async def test_a_cached_answer_uses_no_quota(world: World) -> None:
    """The day's 4 images are spent: a new request is refused, a repeat still answered."""
    await world.finished_job(images=4)
    assert not isinstance(await world.submit(prompt="something new"), Accepted)
    job = await submitted(world, count=4)
    assert job.cached_from is not None


async def test_the_copy_outlives_its_original_deleted(world: World) -> None:
    original = await world.stores.jobs.get(await world.finished_job())
    job = await submitted(world)
    await world.core.acting.delete_images(original, MEMBER)
    stored = await world.stores.jobs.get(job.id)
    assert (world.stores.config.storage.data_dir / stored.outputs[0].path).is_file()


async def test_a_drawn_seed_is_never_cached(world: World) -> None:
    await world.finished_job()
    draft = OptionsDraft(
        command="imagine",
        options=Options(prompt="a lighthouse", seed=None),
        catalog=world.core.catalog,
    )
    accepted = await world.core.door.submit(MEMBER, draft, NO_INPUTS, Origin.SLASH)
    assert isinstance(accepted, Accepted)
    job = accepted.jobs[0].job
    assert (job.state, job.cached_from, job.result_key) == (JobState.QUEUED, None, None)


async def test_a_seed_named_by_flag_is_cached(world: World) -> None:
    original_id = await world.finished_job()
    job = await submitted(world, prompt="a lighthouse --seed 1", seed=None)
    assert job.cached_from == original_id


async def test_another_members_result_is_never_used(world: World) -> None:
    await world.finished_job(MEMBER)
    job = await submitted(world, OTHER)
    assert (job.state, job.cached_from) == (JobState.QUEUED, None)


async def test_a_deleted_result_is_not_reused(world: World) -> None:
    original = await world.stores.jobs.get(await world.finished_job())
    await world.core.acting.delete_images(original, MEMBER)
    job = await submitted(world)
    assert (job.state, job.cached_from) == (JobState.QUEUED, None)


async def test_a_result_whose_files_are_gone_is_not_reused(world: World) -> None:
    original = await world.stores.jobs.get(await world.finished_job())
    (world.stores.config.storage.data_dir / original.outputs[0].path).unlink()
    job = await submitted(world)
    assert (job.state, job.cached_from) == (JobState.QUEUED, None)


async def test_a_forgotten_members_results_are_not_reused(world: World) -> None:
    await world.finished_job(MEMBER)
    await world.stores.users.forget(MEMBER.user_id, Actor(MEMBER.user_id))
    job = await submitted(world)
    assert (job.state, job.cached_from) == (JobState.QUEUED, None)
    async with world.stores.sessions() as session:
        forgotten = await session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.user_id < 0, Job.result_key.is_not(None))
        )
    assert forgotten == 0  # their result keys (hashes of their words) went too


async def test_a_repeat_after_the_checkpoint_file_is_rewritten_is_not_answered(
    tmp_path: Path, database: Database
) -> None:
    """The checkpoint replaced under the same path: before its first run records its hash,
    only its files' stamp in the key tells the old result from the new checkpoint's."""
    model = tmp_path / "model"
    (model / "unet").mkdir(parents=True)
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"first weights")
    async with open_stores(tmp_path, CONFIG, model, database) as stores:
        world = world_of(stores, service_on(stores, cache=True))
        try:
            original_id = await world.finished_job()
            assert (await submitted(world)).cached_from == original_id
            rewrite(weights, b"other weights")
            job = await submitted(world)
        finally:
            await world.jobs.stop()
    assert (job.state, job.cached_from) == (JobState.QUEUED, None)


async def test_a_repeat_waits_for_its_twin_in_flight_and_is_answered_by_it(world: World) -> None:
    first = await submitted(world)
    second = await submitted(world)
    assert (second.state, second.cached_from) == (JobState.QUEUED, first.id)
    assert await waiting_ids(world) == [first.id]  # the second is not claimed meanwhile
    heard = Recorder()
    world.jobs.add_listener(heard)
    await world.stores.jobs.transition(first.id, JobState.QUEUED, JobState.RUNNING, device="cpu")
    made = output(first.id, 0)
    path = world.stores.config.storage.data_dir / made.path
    path.parent.mkdir(parents=True)
    path.write_bytes(b"png")
    # As the pool tells the listeners of a job's end.
    assert world.jobs.cache is not None
    world.jobs.cache.job_finished(await world.stores.jobs.succeed(first.id, 1.0, [made]))
    await heard.wait_finished(1)
    answered = heard.finished[second.id]
    assert (answered.state, answered.cached_from, answered.gpu_seconds) == (
        JobState.SUCCEEDED,
        first.id,
        0,
    )
    assert await world.stores.count(Reservation, Reservation.job_id == second.id) == 0
    assert await world.stores.count(UsageEntry, UsageEntry.job_id == second.id) == 0


async def test_the_same_request_twice_at_once_runs_once(world: World) -> None:
    """Two identical requests admitted at the same moment (a member's double click, two
    clients): one is queued to run, the other waits for its result."""
    jobs = await asyncio.gather(submitted(world), submitted(world))
    runs = [job for job in jobs if job.cached_from is None]
    (waiter,) = [job for job in jobs if job.cached_from is not None]
    assert [job.id for job in runs] == [waiter.cached_from]
    assert await waiting_ids(world) == [waiter.cached_from]


async def test_a_repeat_whose_twin_fails_runs_itself(world: World) -> None:
    first = await submitted(world)
    second = await submitted(world)
    assert await world.jobs.cancel(first.id, MEMBER.user_id)
    assert world.jobs.cache is not None
    await world.jobs.cache.settling()  # the settle the cancel's end set off
    job = await world.stores.jobs.get(second.id)
    assert (job.state, job.cached_from) == (JobState.QUEUED, None)
    assert await waiting_ids(world) == [second.id]
    trail = [e.action for e in await world.stores.jobs.audit_trail(second.id)]
    assert "job.cache_released" in trail


async def test_with_the_cache_off_a_repeat_is_queued(
    tmp_path: Path, tiny_model_dir: Path, database: Database
) -> None:
    async with open_stores(tmp_path, CONFIG, tiny_model_dir, database) as stores:
        world = world_of(stores, service_on(stores))
        await world.finished_job()
        job = await submitted(world)
    assert (job.state, job.cached_from, job.result_key) == (JobState.QUEUED, None, None)


async def test_on_a_bucket_the_repeat_is_answered_from_and_copied_in_the_bucket(
    tmp_path: Path, tiny_model_dir: Path, database: Database, bucket: Bucket
) -> None:
    """With `[storage] backend = "s3"` the images are only in the bucket: the cache finds
    the earlier result there and copies it there, under the new job's own keys."""
    async with open_stores(tmp_path, bucket.toml() + CONFIG, tiny_model_dir, database) as stores:
        world = world_of(stores, service_on(stores, cache=True))
        try:
            original = await submitted(world)
            await stores.jobs.transition(original.id, JobState.QUEUED, JobState.RUNNING)
            made = output(original.id, 0)
            await stores.blobs.put(made.path, b"the original's png")
            await stores.jobs.succeed(original.id, 1.0, [made])
            job = await submitted(world)
        finally:
            await world.jobs.stop()
    assert (job.state, job.cached_from) == (JobState.SUCCEEDED, original.id)
    assert bucket.keys() == {made.path, f"images/{job.id}/0.png"}
    assert bucket.read(f"images/{job.id}/0.png") == b"the original's png"
    assert not (stores.config.storage.data_dir / "images").exists()
