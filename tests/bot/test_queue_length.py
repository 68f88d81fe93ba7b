"""`[queue] max_length` under concurrent submissions, on a real SQLite file and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.jobs.service import QueueFull
from bot.jobs.spec import Options, build_spec
from bot.store.jobs import Requester
from bot.store.models import Job, JobState
from tests.databases import Database
from tests.stores import open_stores, service_on

MAX_LENGTH = 3
SUBMISSIONS = 12


@pytest.mark.parametrize("quotas", [False, True], ids=["without-quotas", "with-quotas"])
async def test_concurrent_submissions_never_queue_more_than_max_length(
    tmp_path: Path, tiny_model_dir: Path, quotas: bool, database: Database
) -> None:
    extra = f"[queue]\nmax_length = {MAX_LENGTH}\n"
    async with open_stores(tmp_path, extra, tiny_model_dir, database) as stores:
        config = stores.config
        # No worker runs: every admitted job stays waiting, as on a busy GPU.
        service = service_on(stores, quotas=quotas)
        spec = build_spec(Options(prompt="a lighthouse", seed=1), config.models, "tiny")
        members = [
            Requester(user_id=700 + n, user_name=f"member{n}", guild_id=1, channel_id=2)
            for n in range(SUBMISSIONS)
        ]
        # A running bot's pool holds a connection for each of them already.
        await asyncio.gather(*(stores.jobs.waiting_count() for _ in members))
        outcomes = await asyncio.gather(
            *(service.submit(spec, member) for member in members), return_exceptions=True
        )

        refused = [o for o in outcomes if isinstance(o, QueueFull)]
        others = [o for o in outcomes if isinstance(o, BaseException) and o not in refused]
        assert others == []
        assert len(refused) == SUBMISSIONS - MAX_LENGTH
        assert await stores.count(Job, Job.state == JobState.QUEUED) == MAX_LENGTH
        # A freed place is taken again: the count is of waiting jobs, not of submissions.
        queued = next(o for o in outcomes if not isinstance(o, BaseException))
        assert await service.cancel(queued.job.id, None)
        await service.submit(spec, members[0])
        with pytest.raises(QueueFull):
            await service.submit(spec, members[1])
