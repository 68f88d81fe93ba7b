"""Waiting requests wait at most `[http] wait_seconds`: the generation routes and
POST /v1/jobs?wait=true answer with the job once it ended, or 202 with its id and where
to poll it after the wait; the job goes on and succeeds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from bot.store.models import AuditEntry, Job
from tests.databases import Database
from tests.held import HeldSuccess

from .conftest import RunningApi, open_api

PROMPT = {"text_prompts": [{"text": "a slow heron"}], "steps": 2}


@contextlib.asynccontextmanager
async def api_waiting(
    directory: Path, model_dir: Path, database: Database, seconds: float, held: bool = False
) -> AsyncIterator[tuple[RunningApi, HeldSuccess | None]]:
    """The API with `wait_seconds = seconds`; with `held`, each job's finish is held
    (the engine answered, the job still runs) until the test releases it."""
    with database.fresh() as section:
        running, engine = await open_api(
            directory, model_dir, section, http=f"wait_seconds = {seconds}"
        )
        store = None
        if held:
            store = HeldSuccess(running.sessions, running.quotas.rules.pricing)
            running.service.store = store  # before anything starts: every part reads it
        try:
            await running.service.start()
            await running.http.start()
            running.service.start_workers()
            running.url = running.http.url
            yield running, store
        finally:
            if store is not None:
                store.release.set()
            await running.http.stop()
            await running.service.stop()
            await engine.dispose()


async def succeeded(running: RunningApi, job_id: str, headers: dict[str, str]) -> dict[str, object]:
    for _ in range(600):
        view = (await running.call("GET", f"/v1/jobs/{job_id}", headers=headers)).json()
        if view["status"] == "succeeded":
            return dict(view)
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} did not succeed: {view}")


async def test_a_job_done_within_the_wait_is_answered_whole(
    tmp_path: Path, tiny_model_dir: Path, database: Database
) -> None:
    async with api_waiting(tmp_path, tiny_model_dir, database, 120) as (running, _):
        member = await running.member()
        answer = await running.call(
            "POST", "/v1/jobs?wait=true", headers=member.headers, json=PROMPT
        )
        assert answer.status_code == 200, answer.text
        view = answer.json()
        assert view["status"] == "succeeded" and len(view["artifacts"]) == 1


async def test_after_the_wait_a_request_is_answered_202_and_its_job_succeeds_later(
    tmp_path: Path, tiny_model_dir: Path, database: Database
) -> None:
    async with api_waiting(tmp_path, tiny_model_dir, database, 1.0, held=True) as (
        running,
        store,
    ):
        assert store is not None
        member = await running.member()
        stability = await running.call(
            "POST", "/v1/generation/tiny/text-to-image", headers=member.headers, json=PROMPT
        )
        # Answered before the job's finish could be recorded: the wait ended first.
        assert not store.release.is_set()
        assert stability.status_code == 202, stability.text
        job_id = stability.json()["id"]
        assert stability.headers["Location"] == f"/v1/jobs/{job_id}"
        assert stability.json()["status"] in ("queued", "running")

        jobs = await running.call("POST", "/v1/jobs?wait=true", headers=member.headers, json=PROMPT)
        assert jobs.status_code == 202, jobs.text
        second = jobs.json()["id"]
        assert jobs.headers["Location"] == f"/v1/jobs/{second}"

        store.release.set()
        for job in (job_id, second):
            view = await succeeded(running, job, member.headers)
            assert len(view["artifacts"]) == 1  # type: ignore[arg-type]
        # No longer its connection's: a restart would not cancel it; audited.
        waited = await running.rows(Job, Job.id.in_([job_id, second]))
        assert [job.synchronous for job in waited] == [False, False]
        ended = await running.rows(AuditEntry, AuditEntry.action == "job.wait_ended")
        assert sorted(entry.target for entry in ended) == sorted([job_id, second])
