"""How the service is doing, read from the database: the one source for /admin status,
the alerts and the metrics' gauges.

Everything here is a read. Windows are small (the last hour, the last 100 jobs,
the last 24 hours), served by the jobs indexes on state and times, and the
arithmetic (percentiles, hourly buckets) is done in Python on those rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..moderation.service import BLOCKED_ACTION
from ..store import audit
from ..store.models import FINISHED, AuditEntry, Job, JobState, Lane, utcnow

# Refusals in the audit log: "<command>.refused" entries and the store's "job.refused"
# (outcome "banned" or "quota"). A blocked prompt's strike (moderation.blocked) is not
# one: its command's refusal has an entry of its own, counted once.
REFUSAL_OUTCOMES = ("refused", "banned", "quota")


@dataclass(frozen=True)
class Failure:
    job_id: str
    finished_at: datetime | None
    model: str
    error: str


@dataclass(frozen=True)
class HourSummary:
    """The last hour: jobs finished, how many succeeded, images, and queue waits."""

    finished: int
    succeeded: int
    failed: int
    images: int
    waits: list[float] = field(default_factory=list)

    @property
    def success_rate(self) -> float | None:
        judged = self.succeeded + self.failed
        return self.succeeded / judged if judged else None

    def wait_percentile(self, q: float) -> float | None:
        return percentile(self.waits, q)


@dataclass(frozen=True)
class Refusal:
    id: int
    action: str
    outcome: str
    params: dict[str, Any]

    @property
    def kind(self) -> str:
        """Why: moderation (blocklist), rate_limited, paused, out_of_scope, banned, quota,
        queue_full, not_admin or input."""
        given = self.params.get("kind")
        if isinstance(given, str):
            return given
        if self.outcome in ("banned", "quota"):
            return self.outcome
        if self.action.startswith("admin."):
            return "not_admin"
        return "input"


@dataclass(frozen=True)
class HourPoint:
    start: datetime
    finished: int
    images: int
    queue_depth: int  # jobs waiting at the start of the hour


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _seconds(later: datetime | None, earlier: datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    return (later - earlier).total_seconds()


class OpsQueries:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def queue_depth(self) -> dict[Lane, int]:
        async with self._sessions() as session:
            rows = await session.execute(
                select(Job.lane, func.count())
                .where(Job.state == JobState.QUEUED)
                .group_by(Job.lane)
            )
            found = {lane: count for lane, count in rows}
        return {lane: found.get(lane, 0) for lane in Lane}

    async def jobs_by_state(self) -> dict[JobState, int]:
        async with self._sessions() as session:
            rows = await session.execute(select(Job.state, func.count()).group_by(Job.state))
            found = {state: count for state, count in rows}
        return {state: found.get(state, 0) for state in JobState}

    async def recent_outcomes(self, jobs: int) -> list[JobState]:
        """States of the last `jobs` jobs that succeeded or failed, newest first
        (cancelled and blocked jobs say nothing about the service's health)."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(Job.state)
                .where(Job.state.in_([JobState.SUCCEEDED, JobState.FAILED]))
                .order_by(Job.finished_at.desc(), Job.id.desc())
                .limit(jobs)
            )
            return list(rows)

    async def mean_delivery_seconds(self, period: timedelta) -> float | None:
        """Mean time from queued to delivered of the jobs delivered in the last `period`."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(Job.created_at, Job.delivered_at).where(
                    Job.delivered_at >= utcnow() - period
                )
            )
            spans = [s for created, delivered in rows if (s := _seconds(delivered, created))]
        return sum(spans) / len(spans) if spans else None

    async def hour_summary(self, now: datetime | None = None) -> HourSummary:
        now = now or utcnow()
        since = now - timedelta(hours=1)
        async with self._sessions() as session:
            finished = (
                await session.execute(
                    select(Job.state, Job.seeds).where(
                        Job.state.in_(FINISHED), Job.finished_at >= since
                    )
                )
            ).all()
            started = await session.execute(
                select(Job.created_at, Job.started_at).where(Job.started_at >= since)
            )
            waits = [w for created, begun in started if (w := _seconds(begun, created)) is not None]
        return HourSummary(
            finished=len(finished),
            succeeded=sum(1 for state, _ in finished if state is JobState.SUCCEEDED),
            failed=sum(1 for state, _ in finished if state is JobState.FAILED),
            images=sum(len(seeds) for state, seeds in finished if state is JobState.SUCCEEDED),
            waits=waits,
        )

    async def last_failures(self, count: int = 5) -> list[Failure]:
        async with self._sessions() as session:
            rows = await session.execute(
                select(Job.id, Job.finished_at, Job.model, Job.error)
                .where(Job.state == JobState.FAILED)
                .order_by(Job.finished_at.desc(), Job.id.desc())
                .limit(count)
            )
            return [Failure(job_id, at, model, error or "") for job_id, at, model, error in rows]

    async def hourly(self, hours: int = 24, now: datetime | None = None) -> list[HourPoint]:
        """Per hour of the last `hours`: jobs finished, images made, and the queue's depth
        at the hour's start, rebuilt from each job's queued, started and finished times."""
        now = now or utcnow()
        first = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
        async with self._sessions() as session:
            # Only jobs unfinished at the window's start matter: waiting or finishing in it.
            rows = (
                await session.execute(
                    select(
                        Job.state, Job.seeds, Job.created_at, Job.started_at, Job.finished_at
                    ).where(or_(Job.finished_at.is_(None), Job.finished_at >= first))
                )
            ).all()
        points = []
        for hour in range(hours):
            start = first + timedelta(hours=hour)
            end = start + timedelta(hours=1)
            done = [r for r in rows if r.finished_at is not None and start <= r.finished_at < end]
            waiting = sum(
                1
                for r in rows
                if r.created_at <= start
                and (r.started_at is None or r.started_at > start)
                and (r.finished_at is None or r.finished_at > start)
            )
            points.append(
                HourPoint(
                    start=start,
                    finished=len(done),
                    images=sum(len(r.seeds) for r in done if r.state is JobState.SUCCEEDED),
                    queue_depth=waiting,
                )
            )
        return points

    async def refusals_after(self, audit_id: int) -> list[Refusal]:
        """Refusals audited after entry `audit_id`, oldest first (read by primary key range)."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(AuditEntry.id, AuditEntry.action, AuditEntry.outcome, AuditEntry.params)
                .where(
                    AuditEntry.id > audit_id,
                    AuditEntry.outcome.in_(REFUSAL_OUTCOMES),
                    AuditEntry.action != BLOCKED_ACTION,
                )
                .order_by(AuditEntry.id)
            )
            return [
                Refusal(i, action, outcome, params or {}) for i, action, outcome, params in rows
            ]

    async def last_audit_id(self) -> int:
        async with self._sessions() as session:
            return await session.scalar(select(func.max(AuditEntry.id))) or 0

    async def record_alert(self, action: str, name: str, message: str, outcome: str) -> None:
        async with self._sessions.begin() as session:
            audit.record(
                session, action, outcome, target=f"alert:{name}", params={"message": message}
            )
