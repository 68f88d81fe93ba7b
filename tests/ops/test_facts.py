"""The facts /admin status, the alerts and the metrics read from the database."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import update

from bot.moderation.service import Moderation, ScreenedText, TextKind
from bot.ops.facts import OpsQueries, percentile
from bot.store.audit import Actor
from bot.store.guilds import GuildStore
from bot.store.jobs import Requester
from bot.store.models import Job, Lane
from tests.stores import open_stores, spec

ALICE = Requester(user_id=7, user_name="alice")
NOW = datetime(2030, 1, 2, 12, 30, tzinfo=UTC)


def test_percentiles_are_nearest_rank() -> None:
    waits = [float(n) for n in range(1, 101)]
    assert percentile(waits, 50) == 50.0 and percentile(waits, 95) == 95.0
    assert percentile([3.0], 95) == 3.0 and percentile([], 50) is None


async def test_hourly_queue_depth_and_throughput_are_rebuilt_from_job_times(
    tmp_path: Path,
) -> None:
    async with open_stores(tmp_path) as stores:
        done = await stores.run_job("done", ALICE, 2.0, count=2)
        await stores.quotas.admit("waiting", ALICE, spec(), "tiny", [1])
        times = {
            # queued 10:10, started 11:20, finished 11:21: waiting at 11:00, finished in 11:xx
            done.id: (
                NOW.replace(hour=10, minute=10),
                NOW.replace(hour=11, minute=20),
                NOW.replace(hour=11, minute=21),
            ),
            "waiting": (NOW.replace(hour=11, minute=45), None, None),
        }
        async with stores.sessions.begin() as session:
            for job_id, (created, started, finished) in times.items():
                await session.execute(
                    update(Job)
                    .where(Job.id == job_id)
                    .values(created_at=created, started_at=started, finished_at=finished)
                )
        queries = OpsQueries(stores.sessions)
        points = {p.start.hour: p for p in await queries.hourly(24, now=NOW)}
        assert len(points) == 24 and min(points) == 0  # 13:00 yesterday .. 12:00 today
        assert (points[10].queue_depth, points[11].queue_depth, points[12].queue_depth) == (0, 1, 1)
        assert (points[11].finished, points[11].images) == (1, 2)
        assert points[12].finished == 0
        assert await queries.queue_depth() == {Lane.PRIORITY: 0, Lane.NORMAL: 1, Lane.RELAX: 0}
        summary = await queries.hour_summary(now=NOW.replace(hour=11, minute=50))
        assert (summary.finished, summary.succeeded, summary.images) == (1, 1, 2)
        assert summary.waits == [70 * 60.0] and summary.success_rate == 1.0


async def test_a_blocked_prompt_is_one_refusal_of_kind_moderation(tmp_path: Path) -> None:
    """Its strike (moderation.blocked) and its command's refusal: counted once."""
    async with open_stores(tmp_path, '[moderation]\nblocklist = ["gore"]\n') as stores:
        moderation = Moderation(
            stores.config.moderation, GuildStore(stores.sessions), stores.users, stores.audit
        )
        blocked = await moderation.screen(
            Actor(7, 10), [ScreenedText(TextKind.PROMPT, "g0re")], "imagine"
        )
        assert blocked is not None
        await stores.jobs.record_refusal(
            "imagine.refused", 7, 10, None, blocked.message, kind="moderation"
        )
        refusals = await OpsQueries(stores.sessions).refusals_after(0)
        assert [(r.action, r.kind) for r in refusals] == [("imagine.refused", "moderation")]
