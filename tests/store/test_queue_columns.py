"""The scheduler's columns of a job row (Job.batch_key, Job.image_count): a claim reads
them instead of parsing specs, so they must equal what the row's spec gives wherever a
row is written, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import select, update

from bot.jobs.spec import JobSpec, batch_key, stored_batch_key
from bot.store.jobs import QueuedRow, Requester
from bot.store.migrate import downgrade, upgrade
from bot.store.models import Job, JobState
from tests.stores import Stores, spec

DANA = Requester(1, "dana")
WINDOW = timedelta(hours=1)


async def stored(stores: Stores) -> dict[str, tuple[str | None, int | None, JobSpec]]:
    """Each row's stored batch key and image count, beside its spec."""
    async with stores.sessions() as session:
        rows = await session.execute(select(Job.id, Job.batch_key, Job.image_count, Job.spec))
        return {job_id: (key, count, job_spec) for job_id, key, count, job_spec in rows}


async def computed(stores: Stores) -> dict[str, tuple[str | None, int | None, JobSpec]]:
    """Each row's spec with the batch key and image count computed from it."""
    return {
        job_id: (stored_batch_key(job_spec), job_spec.count, job_spec)
        for job_id, (_, _, job_spec) in (await stored(stores)).items()
    }


def first(rows: Sequence[QueuedRow], served: dict[int, float]) -> list[str]:
    return [rows[0].job_id]


async def test_a_queued_job_holds_its_spec_batch_key_and_image_count(stores: Stores) -> None:
    await stores.jobs.create("a", DANA, spec(steps=30), "tiny", [1])
    await stores.jobs.create("b", DANA, spec(steps=30, count=2, prompt="a cat"), "tiny", [2, 3])
    await stores.jobs.create("c", DANA, spec(steps=20), "tiny", [4])

    rows = await stored(stores)
    assert rows == await computed(stores)
    # Equal stored keys exactly where the scheduler's keys are equal: a and b batch.
    keys = {job_id: key for job_id, (key, _, _) in rows.items()}
    specs = {job_id: job_spec for job_id, (_, _, job_spec) in rows.items()}
    assert batch_key(specs["a"]) == batch_key(specs["b"]) != batch_key(specs["c"])
    assert keys["a"] == keys["b"] != keys["c"]
    # The claim's rows carry them, and the model, without their specs.
    waiting, _ = await stores.jobs.waiting_snapshot(WINDOW)
    assert {(row.job_id, row.model, row.batch_key, row.images) for row in waiting} == {
        ("a", "tiny", keys["a"], 1),
        ("b", "tiny", keys["b"], 2),
        ("c", "tiny", keys["c"], 1),
    }


async def test_a_requeued_job_keeps_them(stores: Stores) -> None:
    await stores.jobs.create("a", DANA, spec(steps=25, count=3), "tiny", [1, 2, 3])
    (claimed,) = await stores.jobs.claim("cpu", first, WINDOW)
    await stores.jobs.return_to_queue(claimed.id)

    assert (await stores.jobs.get("a")).state is JobState.QUEUED
    assert await stored(stores) == await computed(stores)
    (again,) = await stores.jobs.claim("cpu", first, WINDOW)
    assert again.id == "a"


async def test_a_row_written_without_them_is_claimed_as_its_spec_says(stores: Stores) -> None:
    """A front door of the release before still queueing while a new worker claims."""
    await stores.jobs.create("old", DANA, spec(steps=30, count=2), "tiny", [1, 2])
    await stores.jobs.create("new", DANA, spec(steps=30, prompt="a cat"), "tiny", [3])
    async with stores.sessions.begin() as session:
        await session.execute(
            update(Job).where(Job.id == "old").values(batch_key=None, image_count=None)
        )
    keys = {job_id: key for job_id, (key, _, _) in (await computed(stores)).items()}

    waiting, _ = await stores.jobs.waiting_snapshot(WINDOW)
    assert {(row.job_id, row.batch_key, row.images) for row in waiting} == {
        ("old", keys["old"], 2),
        ("new", keys["new"], 1),
    }
    claimed = await stores.jobs.claim("cpu", lambda rows, _: [r.job_id for r in rows], WINDOW)
    assert sorted(job.id for job in claimed) == ["new", "old"]


async def test_migration_0014_fills_them_for_waiting_and_running_jobs(stores: Stores) -> None:
    await stores.run_job("done", DANA, 1.0)
    await stores.jobs.create("waits", DANA, spec(steps=20, count=2), "tiny", [1, 2])
    await stores.jobs.create("runs", DANA, spec(steps=40), "tiny", [3])
    await stores.jobs.transition("runs", JobState.QUEUED, JobState.RUNNING, device="cpu")
    url = stores.config.database_url
    await asyncio.to_thread(downgrade, url, "0013")
    await asyncio.to_thread(upgrade, url)

    rows = await stored(stores)
    expected = await computed(stores)
    assert rows["waits"] == expected["waits"] and rows["runs"] == expected["runs"]
    # A finished job never waits again: left empty rather than parsed.
    assert rows["done"][:2] == (None, None)
