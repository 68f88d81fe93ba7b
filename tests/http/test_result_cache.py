"""The result cache over HTTP: a member's repeat of a seeded generation is answered from
their earlier job's images, marked by its header and job view, and costs nothing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bot.store.models import AuditEntry, Job, JobState, UsageEntry

from .conftest import RunningApi

pytestmark = pytest.mark.asyncio(loop_scope="package")

BODY = {
    "text_prompts": [{"text": "A lighthouse on a cliff"}],
    "height": 64,
    "width": 64,
    "samples": 1,
    "steps": 3,
    "seed": 7,
}


async def generate(api: RunningApi, key: str, body: dict[str, Any]) -> Any:
    return await api.call(
        "POST",
        "/v1/generation/tiny/text-to-image",
        headers={"Authorization": f"Bearer {key}", "Accept": "application/json"},
        json=body,
    )


async def test_a_repeated_seeded_generation_is_answered_from_the_cache(api: RunningApi) -> None:
    member = await api.member()
    first = await generate(api, member.key, BODY)
    assert first.status_code == 200 and "Atelier-Cached-From" not in first.headers
    (original,) = await api.rows(Job, Job.user_id == member.user_id)
    started = time.perf_counter()
    again = await generate(api, member.key, BODY)
    elapsed = time.perf_counter() - started
    assert again.status_code == 200
    assert again.headers["Atelier-Cached-From"] == original.id
    assert again.json()["artifacts"] == first.json()["artifacts"]  # the same pixels and seed
    assert elapsed < 0.3
    (cached,) = await api.rows(Job, Job.user_id == member.user_id, Job.id != original.id)
    assert (cached.state, cached.cached_from, cached.gpu_seconds) == (
        JobState.SUCCEEDED,
        original.id,
        0,
    )
    ledger = await api.rows(UsageEntry, UsageEntry.user_id == member.user_id)
    assert [entry.job_id for entry in ledger] == [original.id]  # the repeat cost nothing
    assert await api.rows(
        AuditEntry, AuditEntry.action == "job.cached", AuditEntry.target == cached.id
    )
    view = await api.call(
        "GET", f"/v1/jobs/{cached.id}", headers={"Authorization": f"Bearer {member.key}"}
    )
    assert view.json()["cached_from"] == original.id
    assert view.headers["Atelier-Cached-From"] == original.id


async def test_a_generation_without_a_seed_is_never_cached(api: RunningApi) -> None:
    member = await api.member()
    for _ in range(2):
        answer = await generate(api, member.key, BODY | {"seed": 0})  # 0: draw one
        assert "Atelier-Cached-From" not in answer.headers
    jobs = await api.rows(Job, Job.user_id == member.user_id)
    assert [job.cached_from for job in jobs] == [None, None]
    assert all(job.gpu_seconds for job in jobs)


async def test_the_same_generation_sent_twice_at_once_runs_once(api: RunningApi) -> None:
    """Both answered, with the same pixels, from one run on the engine: the second waited
    for the first's result."""
    member = await api.member()
    body = BODY | {"seed": 8}
    answers = await asyncio.gather(*(generate(api, member.key, body) for _ in range(2)))
    assert [answer.status_code for answer in answers] == [200, 200]
    assert answers[0].json()["artifacts"] == answers[1].json()["artifacts"]
    jobs = await api.rows(Job, Job.user_id == member.user_id)
    (ran,) = [job for job in jobs if job.cached_from is None]
    (waited,) = [job for job in jobs if job.cached_from is not None]
    assert (waited.cached_from, waited.gpu_seconds) == (ran.id, 0)
    runs = await api.rows(
        AuditEntry, AuditEntry.action == "job.running", AuditEntry.target.in_([ran.id, waited.id])
    )
    assert [entry.target for entry in runs] == [ran.id]  # one run on the engine
    ledger = await api.rows(UsageEntry, UsageEntry.user_id == member.user_id)
    assert [entry.job_id for entry in ledger] == [ran.id]
