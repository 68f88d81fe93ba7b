"""The job queue's two lanes: relax jobs run only when no in-quota job waits."""

from __future__ import annotations

import asyncio

from bot.jobs.queue import JobQueue
from bot.store.models import Lane


async def test_workers_take_every_normal_job_before_any_relax_job() -> None:
    queue = JobQueue()
    assert await queue.put("relax1", Lane.RELAX) == 1
    assert await queue.put("normal1") == 1  # goes ahead of the waiting relax job
    assert await queue.put("relax2", Lane.RELAX) == 3
    assert await queue.put("normal2") == 2
    assert [queue.position(job) for job in ("normal1", "normal2", "relax1", "relax2")] == [
        1, 2, 3, 4,
    ]  # fmt: skip
    assert [await queue.take() for _ in range(2)] == ["normal1", "normal2"]
    assert await queue.take() == "relax1"
    await queue.put("normal3")
    assert [await queue.take() for _ in range(2)] == ["normal3", "relax2"]
    assert len(queue) == 0


async def test_a_waiting_worker_wakes_for_a_relax_job_and_removal_works_in_both_lanes() -> None:
    queue = JobQueue()
    taker = asyncio.create_task(queue.take())
    await asyncio.sleep(0)
    await queue.put("relax1", Lane.RELAX)
    assert await asyncio.wait_for(taker, 5) == "relax1"
    await queue.put("relax2", Lane.RELAX)
    await queue.put("normal1")
    assert queue.remove("relax2") and queue.remove("normal1")
    assert not queue.remove("relax2")
    assert len(queue) == 0
