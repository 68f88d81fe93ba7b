"""Alerts: one post when a condition starts, none while it lasts, one when it clears."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bot.config import AlertsConfig
from bot.ops.alerts import Alerts
from bot.ops.facts import OpsQueries
from bot.store.jobs import Requester
from bot.store.models import AuditEntry, JobState
from tests.stores import Stores, open_stores, spec

ALICE = Requester(user_id=7, user_name="alice")
GB = 10**9


@dataclass
class Engine:
    """What the alerts read of an engine: how often it started."""

    device: str = "cuda:0"
    starts: int = 1


class Posts(list[str]):
    async def __call__(self, message: str) -> None:
        self.append(message)


async def fail_job(stores: Stores, job_id: str) -> None:
    await stores.quotas.admit(job_id, ALICE, spec(), "tiny", [1])
    await stores.jobs.transition(job_id, JobState.QUEUED, JobState.RUNNING, device="cpu")
    await stores.jobs.transition(
        job_id, JobState.RUNNING, JobState.FAILED, "error", error="the engine exited"
    )


def alerts_for(stores: Stores, posts: Posts, engine: Engine, free: list[int]) -> Alerts:
    config = AlertsConfig(
        channel_id=1, min_success_rate=0.75, success_window=4, max_engine_restarts_per_hour=2
    )
    queries = OpsQueries(stores.sessions)
    return Alerts(config, queries, [engine], lambda: free[0], 2.0, posts)  # type: ignore[list-item]


async def test_failing_jobs_alert_once_and_recovery_is_posted_once(tmp_path: Path) -> None:
    async with open_stores(tmp_path) as stores:
        posts, free = Posts(), [100 * GB]
        alerts = alerts_for(stores, posts, Engine(), free)
        await stores.run_job("ok-1", ALICE, 1.0)
        assert await alerts.check() == []
        for n in range(3):
            await fail_job(stores, f"bad-{n}")
            await alerts.check()
        assert len(posts) == 1  # at the first failure, then never again while it lasts
        assert posts[0].startswith("⚠️ Only 50% of the last 2 jobs succeeded (alert under 75%)")
        assert "`bad-0`: the engine exited" in posts[0]
        for n in range(4):
            await stores.run_job(f"ok-{n + 2}", ALICE, 1.0)
            await alerts.check()
        assert len(posts) == 2 and posts[1].startswith("✅ Jobs succeed again")
        assert await stores.count(AuditEntry, AuditEntry.action == "alert.fired") == 1
        assert await stores.count(AuditEntry, AuditEntry.action == "alert.recovered") == 1


async def test_a_flapping_alert_is_posted_again_only_after_repeat_minutes(tmp_path: Path) -> None:
    async with open_stores(tmp_path) as stores:
        posts, free = Posts(), [1 * GB]
        alerts = alerts_for(stores, posts, Engine(), free)
        await alerts.check()
        free[0] = 50 * GB
        await alerts.check()
        free[0] = 1 * GB
        await alerts.check()  # fires again within the hour: not posted
        free[0] = 50 * GB
        await alerts.check()  # nor its recovery
        assert [p[:18] for p in posts] == ["⚠️ Only 1.0 GB fre", "✅ Disk space is ba"]


async def test_engine_restarts_over_the_limit_in_an_hour_alert(tmp_path: Path) -> None:
    async with open_stores(tmp_path) as stores:
        posts, engine = Posts(), Engine(starts=1)
        alerts = alerts_for(stores, posts, engine, [100 * GB])
        engine.starts = 3  # two restarts: at the limit
        assert await alerts.check() == []
        engine.starts = 4
        (posted,) = await alerts.check()
        assert "restarted 3 times in the last hour" in posted
