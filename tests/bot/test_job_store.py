"""The job store against a real migrated SQLite file."""

from __future__ import annotations

import asyncio

from bot.store.jobs import JobStore, Requester
from bot.store.models import JobState


async def test_a_new_members_simultaneous_first_jobs_are_both_recorded(store: JobStore) -> None:
    requester = Requester(user_id=42, user_name="newcomer", channel_id=7)
    jobs = await asyncio.gather(
        *(store.create(f"job{n}", requester, {"prompt": str(n)}, "tiny", [n]) for n in range(5))
    )
    assert sorted(job.id for job in jobs) == [f"job{n}" for n in range(5)]
    for n in range(5):
        stored = await store.get(f"job{n}")
        assert (stored.user_id, stored.state) == (42, JobState.QUEUED)
        trail = await store.audit_trail(f"job{n}")
        assert [entry.action for entry in trail] == ["job.queued"]
