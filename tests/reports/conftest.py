"""Report fixtures: a database seeded with a week of usage by three members."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from bot.store.jobs import Requester
from bot.store.models import Lane, UsageEntry, utcnow
from tests.stores import Stores, open_stores

MEMBERS = [
    Requester(user_id=100 + n, user_name=name) for n, name in enumerate(("ann", "ben", "cy"))
]
# (member index, days ago, GPU seconds, images, lane)
JOBS = [
    (0, 0, 12.0, 2, Lane.NORMAL),
    (0, 1, 6.0, 1, Lane.RELAX),
    (1, 2, 30.0, 4, Lane.NORMAL),
    (2, 6, 3.0, 1, Lane.NORMAL),
    (2, 20, 100.0, 4, Lane.NORMAL),  # outside a 7-day report
]
BILLING = "[billing]\nprice_per_gpu_hour = 36.0\ncurrency = 'EUR'\n"  # 0.01 per GPU second


async def seed(stores: Stores) -> None:
    now = utcnow()
    for n, (member, days_ago, seconds, images, lane) in enumerate(JOBS):
        job_id = f"job{n}"
        await stores.run_job(job_id, MEMBERS[member], seconds, count=images)
        async with stores.sessions.begin() as session:
            await session.execute(
                update(UsageEntry)
                .where(UsageEntry.job_id == job_id)
                .values(at=now - timedelta(days=days_ago, minutes=1), lane=lane)
            )


@pytest.fixture
async def seeded(tmp_path: Path) -> AsyncIterator[Stores]:
    async with open_stores(tmp_path, BILLING) as stores:
        await seed(stores)
        yield stores
