"""The lane heads a claim reads (bot.store.jobs._lane_heads_query: a skip over the
members' queues, then a short range of each) are exactly each queue's first waiting jobs, as
read from every row, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from collections.abc import Collection

import pytest
from sqlalchemy import select

from bot.store.jobs import Requester, _lane_heads_query, _models_param, add_job, upsert_user
from bot.store.models import Job, JobState, Lane
from tests.stores import Stores, spec

MODELS = ("tiny", "other")


async def fill(stores: Stores) -> None:
    """Queues of five members over every lane and two models, with running jobs and
    jobs parked behind an identical one's result among them."""
    rng = random.Random(20)
    async with stores.sessions.begin() as session:
        for n in range(80):
            user = rng.randint(1, 5)
            requester = Requester(user, f"member{user}")
            await upsert_user(session, user)
            job = add_job(
                session,
                f"j{n:02d}",
                requester,
                spec(),
                rng.choice(MODELS),
                [n],
                rng.choice(list(Lane)),
                cached_from="j00" if n and rng.random() < 0.1 else None,
            )
            if rng.random() < 0.1:
                job.state = JobState.RUNNING
            await session.flush()


@pytest.mark.parametrize("models", [None, {"tiny"}, {"other"}, {"tiny", "other"}])
@pytest.mark.parametrize("count", [1, 3])
async def test_the_lane_heads_are_each_queues_first_waiting_jobs(
    stores: Stores, models: Collection[str] | None, count: int
) -> None:
    await fill(stores)
    async with stores.sessions() as session:
        rows = await session.execute(
            select(Job.id, Job.user_id, Job.lane, Job.created_at, Job.model)
            .where(Job.state == JobState.QUEUED, Job.cached_from.is_(None))
            .order_by(Job.created_at, Job.id)
        )
        queues: dict[tuple[int, Lane], list[str]] = {}
        for job_id, user_id, lane, _, model in rows:
            if models is None or model in models:
                queues.setdefault((user_id, lane), []).append(job_id)
        expected = sorted(job_id for queue in queues.values() for job_id in queue[:count])
        connection = await session.connection()
        heads = _lane_heads_query(connection.dialect.name, models is None, count)
        read = await connection.execute(heads, _models_param(models))
        found = sorted(row.id for row in read)
    assert found == expected
    assert len(queues) > 10  # several members, each in several lanes
