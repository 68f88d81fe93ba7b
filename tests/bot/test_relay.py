"""Job events through one interface: in one process (SQLite) as they happen, and across
processes (PostgreSQL), where a front door hears a job run elsewhere from its row and
the notifications, each start, step and end once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.blobs import Blobs, open_blobs
from bot.discord.delivery import _preview_file
from bot.jobs.events import JobEvents
from bot.jobs.relay import SharedEvents, preview_key
from bot.store.db import open_engine, session_factory
from bot.store.events import EventStore
from bot.store.jobs import Requester
from bot.store.models import Job, JobState
from engine.protocol import Progress
from tests.buckets import Bucket
from tests.databases import Database
from tests.stores import Stores, open_stores, spec

ALICE = Requester(user_id=501, user_name="alice", guild_id=1, channel_id=2)
INTERVAL = 0.05

Event = tuple[str, str, object]


class Heard:
    """A JobListener that writes down what it hears."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.previews: list[str | None] = []

    def job_started(self, job: Job) -> None:
        self.events.append(("started", job.id, job.state))

    def job_progress(self, job_id: str, progress: Progress) -> None:
        self.events.append(("progress", job_id, progress.step))
        self.previews.append(progress.preview)

    def job_finished(self, job: Job) -> None:
        self.events.append(("finished", job.id, job.state))


async def soon(condition: Callable[[], bool]) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not heard within 10 s")


async def running_job(stores: Stores, job_id: str) -> Job:
    await stores.quotas.admit(job_id, ALICE, spec(), "tiny", [1])
    return await stores.jobs.transition(job_id, JobState.QUEUED, JobState.RUNNING, device="cpu")


def step(job_id: str, number: int, spool: Path) -> Progress:
    """Step `number`, with the preview the engine wrote for it in `spool`."""
    preview = spool / "images" / job_id / f"{job_id}-preview.png"
    preview.parent.mkdir(parents=True, exist_ok=True)
    preview.write_bytes(f"step {number}".encode())
    return Progress(job_id=job_id, step=number, total=4, preview=str(preview))


async def shown(blobs: Blobs, preview: str | None) -> bytes:
    """The preview a progress edit attaches, read as the Discord delivery reads it."""
    assert preview is not None
    (attached,) = await _preview_file(blobs, preview)
    return bytes(attached.fp.read())


async def test_in_one_process_listeners_hear_each_event_as_it_is_told(
    tmp_path: Path,
) -> None:
    async with open_stores(tmp_path) as stores:
        assert not EventStore(stores.sessions).shared  # SQLite: one process
        events = JobEvents()
        heard = Heard()
        events.add(heard)
        job = await running_job(stores, "job")
        ending = events.ending("job")
        events.started(job)
        events.progress(step("job", 1, stores.config.storage.data_dir))
        ended = await stores.jobs.transition("job", JobState.RUNNING, JobState.FAILED, "error")
        events.finished(ended)
        assert heard.events == [
            ("started", "job", JobState.RUNNING),
            ("progress", "job", 1),
            ("finished", "job", JobState.FAILED),
        ]
        assert (await ending).state is JobState.FAILED


@pytest.mark.postgresql_only
async def test_a_front_door_hears_once_each_event_of_a_job_run_in_another_process(
    tmp_path: Path, database: Database
) -> None:
    async with open_stores(tmp_path, database=database) as stores:
        data_dir = stores.config.storage.data_dir
        assert EventStore(stores.sessions).shared
        # The front door's own connections to the database, as another process has.
        door_engine = open_engine(stores.config.database_url)
        runner = SharedEvents(EventStore(stores.sessions), stores.blobs, INTERVAL)
        door = SharedEvents(EventStore(session_factory(door_engine)), stores.blobs, INTERVAL)
        at_runner, at_door = Heard(), Heard()
        runner.add(at_runner)
        door.add(at_door)
        runner.start()
        try:
            job = await running_job(stores, "job")
            runner.started(job)
            runner.progress(step("job", 1, data_dir))
            await asyncio.sleep(INTERVAL * 4)  # written on the row
            # The front door starts late: the start's notification is gone, the row is not.
            door.start()
            ending = door.ending("job")
            await soon(lambda: ("progress", "job", 1) in at_door.events)
            runner.progress(step("job", 3, data_dir))
            await soon(lambda: ("progress", "job", 3) in at_door.events)
            ended = await stores.jobs.transition("job", JobState.RUNNING, JobState.FAILED, "error")
            runner.finished(ended)
            assert (await asyncio.wait_for(ending, 10)).state is JobState.FAILED
            await asyncio.sleep(INTERVAL * 6)  # the rows read again, the echoes heard
        finally:
            await door.stop()
            await runner.stop()
            await door_engine.dispose()
    told = [
        ("started", "job", JobState.RUNNING),
        ("progress", "job", 1),
        ("progress", "job", 3),
        ("finished", "job", JobState.FAILED),
    ]
    assert at_door.events == told
    assert at_runner.events == told  # its own events, not again from the rows or echoes
    # The runner's listeners hear the engine's file; the door's the key its copy is
    # stored at (a file in the shared data folder with the local backend), gone at the end.
    assert at_runner.previews == [str(data_dir / "images/job/job-preview.png")] * 2
    assert at_door.previews == [preview_key("job")] * 2
    assert not (data_dir / preview_key("job")).exists()


@pytest.mark.postgresql_only
async def test_a_front_door_hears_of_an_end_it_missed_from_the_row(
    tmp_path: Path, database: Database
) -> None:
    """An end whose notification never came (the runner died after it committed) is
    heard at the next read of the rows: the job no longer runs."""
    async with open_stores(tmp_path, database=database) as stores:
        door = SharedEvents(EventStore(stores.sessions), stores.blobs, INTERVAL)
        heard = Heard()
        door.add(heard)
        door.start()
        try:
            await running_job(stores, "job")
            await soon(lambda: ("started", "job", JobState.RUNNING) in heard.events)
            await stores.jobs.transition("job", JobState.RUNNING, JobState.FAILED, "error")
            await soon(lambda: ("finished", "job", JobState.FAILED) in heard.events)
        finally:
            await door.stop()


@pytest.mark.postgresql_only
async def test_a_front_door_on_another_host_shows_the_preview_from_the_bucket(
    tmp_path: Path, database: Database, bucket: Bucket
) -> None:
    """With `[storage] backend = "s3"` and no shared folder, the worker stores each
    interval's latest preview in the bucket, overwriting it; the front door reads it
    from there, and the job's end deletes it."""
    async with open_stores(tmp_path, database=database) as stores:
        worker_spool, door_spool = tmp_path / "worker", tmp_path / "door"
        door_engine = open_engine(stores.config.database_url)
        worker_blobs = open_blobs(bucket.storage(worker_spool))
        door_blobs = open_blobs(bucket.storage(door_spool))
        worker = SharedEvents(EventStore(stores.sessions), worker_blobs, INTERVAL)
        door = SharedEvents(EventStore(session_factory(door_engine)), door_blobs, INTERVAL)
        heard = Heard()
        door.add(heard)
        worker.start()
        door.start()
        try:
            job = await running_job(stores, "job")
            worker.started(job)
            worker.progress(step("job", 1, worker_spool))
            await soon(lambda: ("progress", "job", 1) in heard.events)
            assert heard.previews == [preview_key("job")]
            assert await shown(door_blobs, heard.previews[-1]) == b"step 1"
            worker.progress(step("job", 3, worker_spool))
            await soon(lambda: ("progress", "job", 3) in heard.events)
            assert await shown(door_blobs, heard.previews[-1]) == b"step 3"
            assert bucket.keys() == {preview_key("job")}
            assert not door_spool.exists()  # read from the bucket, nothing kept on the door
            ended = await stores.jobs.transition("job", JobState.RUNNING, JobState.SUCCEEDED)
            worker.finished(ended)
            await soon(lambda: ("finished", "job", JobState.SUCCEEDED) in heard.events)
            await soon(lambda: not bucket.keys())
            assert await _preview_file(door_blobs, preview_key("job")) == []
        finally:
            await door.stop()
            await worker.stop()
            await door_engine.dispose()


@pytest.mark.postgresql_only
async def test_a_rerun_deletes_the_preview_a_killed_run_left(
    tmp_path: Path, database: Database, bucket: Bucket
) -> None:
    """A worker killed mid-job leaves its last preview in the bucket; the job's next run
    deletes it as it ends, even when it ended before storing a preview of its own."""
    async with open_stores(tmp_path, database=database) as stores:
        spool = tmp_path / "worker"
        blobs = open_blobs(bucket.storage(spool))
        await blobs.put(preview_key("job"), b"left by a killed worker")
        # An interval longer than the run: nothing is written on the row before the end.
        worker = SharedEvents(EventStore(stores.sessions), blobs, 60.0)
        worker.started(await running_job(stores, "job"))
        worker.progress(step("job", 1, spool))
        worker.finished(await stores.jobs.transition("job", JobState.RUNNING, JobState.SUCCEEDED))
        await worker.stop()  # lets the deletion under way finish
    assert bucket.keys() == set()
