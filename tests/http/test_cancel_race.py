"""DELETE /v1/jobs/{id} racing the job's finish: the answer is what happened."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.store.models import JobState, Reservation, UsageEntry
from tests.held import HeldSuccess

from .conftest import open_api


async def test_a_cancel_that_loses_to_the_finish_is_a_409_and_the_job_is_kept_and_charged(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    running, database = await open_api(tmp_path, tiny_model_dir)
    store = HeldSuccess(running.sessions, running.quotas.rules.pricing)
    running.service.store = store  # before anything starts: every part reads this one
    try:
        await running.service.start()
        await running.http.start()
        running.service.start_workers()
        running.url = running.http.url
        member = await running.member()
        created = await running.call(
            "POST",
            "/v1/jobs",
            headers=member.headers,
            json={"text_prompts": [{"text": "a quick finch"}], "steps": 2},
        )
        job_id = created.json()["id"]
        await store.held.wait()  # the engine's images are in; the job is still running
        cancel = asyncio.create_task(
            running.call("DELETE", f"/v1/jobs/{job_id}", headers=member.headers)
        )
        await asyncio.sleep(1)  # the DELETE reaches the job while its finish is held
        store.release.set()
        answer = await cancel
    finally:
        await running.http.stop()
        await running.service.stop()
        await database.dispose()

    assert answer.status_code == 409, answer.text
    assert answer.json()["name"] == "conflict" and "succeeded" in answer.json()["message"]
    job = await store.get(job_id)
    assert (job.state, len(job.outputs)) == (JobState.SUCCEEDED, 1)
    assert await running.count(UsageEntry, UsageEntry.job_id == job_id) == 1
    assert await running.count(Reservation) == 0
