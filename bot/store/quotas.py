"""Quota policies and admission: check, reserve and queue a job in one transaction.

The transaction starts with a write (the user upsert), so on SQLite it holds
the write lock before it reads usage, and on PostgreSQL it holds the member's
row lock: two commands from one member cannot both pass a limit only one fits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..config import Config
from ..jobs.spec import JobSpec
from ..quota import (
    Estimate,
    Limits,
    OverQuota,
    Usage,
    check,
    day_bounds,
    effective_limits,
    summary,
)
from . import audit, ledger
from .audit import Actor, user_target
from .jobs import (
    NewJob,
    Requester,
    add_job,
    check_room,
    queued_outcome,
    settle_command,
    upsert_user,
)
from .ledger import Pricing
from .models import Job, JobState, Lane, QuotaPolicy, QuotaScope, utcnow

# The work the config's default estimate is for: one 512x512 image in 30 steps.
REFERENCE_WORK = 512 * 512 * 30
# How many recent jobs of a model its estimate averages over.
HISTORY_JOBS = 20


class Refused(Exception):
    """A job was not queued; `message` is ready to show to the member."""

    @property
    def message(self) -> str:
        return str(self)

    def details(self) -> dict[str, Any]:
        """What the audit entry of the refusal records."""
        return {"reason": self.message}


class UserBanned(Refused):
    def __init__(self, reason: str) -> None:
        super().__init__(f"You cannot use this bot here: {reason}")
        self.reason = reason


class OverQuotaError(Refused):
    def __init__(self, over: OverQuota, jobs: int = 1) -> None:
        together = f" Your prompt makes {jobs} jobs, queued together or not at all." * (jobs > 1)
        super().__init__(over.message() + together)
        self.over = over

    def details(self) -> dict[str, Any]:
        return {"limit": self.over.limit, "left": self.over.left}


@dataclass(frozen=True)
class QuotaRules:
    default: Limits
    zone: ZoneInfo
    relax_when_over: bool
    pricing: Pricing
    default_gpu_seconds: float

    @classmethod
    def from_config(cls, config: Config) -> QuotaRules:
        quota = config.quota
        return cls(
            default=Limits(
                images_per_day=quota.images_per_day,
                gpu_seconds_per_day=quota.gpu_seconds_per_day,
                cost_per_day=quota.cost_per_day,
                jobs_queued=quota.jobs_queued,
            ),
            zone=quota.zone,
            relax_when_over=quota.over_quota == "relax",
            pricing=Pricing(config.billing.price_per_gpu_hour, config.billing.currency),
            default_gpu_seconds=quota.default_gpu_seconds,
        )


@dataclass(frozen=True)
class Admission:
    job: Job
    lane: Lane
    estimate: Estimate


@dataclass(frozen=True)
class QuotaStatus:
    """A member's limits and today's usage (settled plus reserved), for /me."""

    limits: Limits
    usage: Usage
    resets_at: datetime
    currency: str

    def message(self) -> str:
        return summary(self.limits, self.usage, self.resets_at, self.currency)


def work_of(spec: JobSpec) -> int:
    """GPU work grows with pixels x steps x images."""
    return spec.width * spec.height * spec.steps * spec.count


def limits_of(policy: QuotaPolicy | None) -> Limits | None:
    if policy is None:
        return None
    return Limits(
        images_per_day=policy.images_per_day,
        gpu_seconds_per_day=policy.gpu_seconds_per_day,
        cost_per_day=policy.cost_per_day,
        jobs_queued=policy.jobs_queued,
    )


class QuotaStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], rules: QuotaRules) -> None:
        self._sessions = sessions
        self.rules = rules

    async def admit(
        self,
        job_id: str,
        requester: Requester,
        spec: JobSpec,
        model: str,
        seeds: list[int],
        in_quota_lane: Lane = Lane.NORMAL,
    ) -> Admission:
        """Queue the job with its reservation, or raise UserBanned / OverQuotaError.

        A job within its limits goes to `in_quota_lane` (priority for members with a
        priority role); over a limit it goes to the relax lane where that is on. A
        refusal is audited (and committed) before it is raised.
        """
        new = NewJob(job_id, requester, spec, model, seeds)
        (admission,) = await self.admit_many([new], in_quota_lane)
        return admission

    async def admit_many(
        self,
        new: Sequence[NewJob],
        in_quota_lane: Lane = Lane.NORMAL,
        max_waiting: int | None = None,
    ) -> list[Admission]:
        """Queue the jobs of one command (one member's) together, each with its
        reservation, or none of them: UserBanned / OverQuotaError as for `admit`.

        Each job is checked against the limits with the jobs before it counted as
        reserved, so three jobs that fit only two at a time are refused together;
        with the relax lane on, the ones over a limit go there. The command of the
        first job's requester is settled once, in the same transaction. QueueAtLength
        (nothing written) when they would pass `max_waiting` queued jobs.
        """
        requester = new[0].requester
        refusal: Refused | None = None
        async with self._sessions.begin() as session:
            user = await upsert_user(session, requester.user_id, requester.user_name)
            if user.banned:
                refusal = UserBanned(user.ban_reason or "you are banned")
            else:
                await check_room(session, len(new), max_waiting)
                limits = await self._limits(session, requester.user_id, requester.role_ids)
                before, resets_at = await self._usage(session, requester.user_id)
                usage = before
                decisions: list[tuple[NewJob, Estimate, Lane]] = []
                for job in new:
                    estimate = await self._estimate(
                        session, job.model, work_of(job.spec), len(job.seeds)
                    )
                    over = check(limits, usage, estimate, resets_at, self.rules.pricing.currency)
                    # The queued-jobs limit guards against floods: the relax lane does not
                    # lift it.
                    if over is not None and (
                        not self.rules.relax_when_over or over.resets_at is None
                    ):
                        group = self._group_over(limits, before, decisions, estimate, resets_at)
                        same = group is not None and group.limit == over.limit
                        refusal = OverQuotaError(group if same and group else over, len(new))
                        break
                    decisions.append((job, estimate, in_quota_lane if over is None else Lane.RELAX))
                    usage = Usage(
                        images=usage.images + estimate.images,
                        gpu_seconds=usage.gpu_seconds + estimate.gpu_seconds,
                        cost=usage.cost + estimate.cost,
                        jobs_queued=usage.jobs_queued + 1,
                    )
                if refusal is None:
                    admissions = []
                    for job, estimate, lane in decisions:
                        row = add_job(
                            session,
                            job.job_id,
                            job.requester,
                            job.spec,
                            job.model,
                            job.seeds,
                            lane,
                            result_key=job.result_key,
                            cached_from=job.cached_from,
                        )
                        ledger.reserve(session, row, estimate)
                        admissions.append(Admission(job=row, lane=lane, estimate=estimate))
                    await settle_command(session, requester, queued_outcome(new))
                    return admissions
            await settle_command(session, requester, f"refused: {refusal.message}")
            audit.record(
                session,
                "job.refused",
                "banned" if isinstance(refusal, UserBanned) else "quota",
                actor_id=requester.user_id,
                guild_id=requester.guild_id,
                channel_id=requester.channel_id,
                params={
                    **refusal.details(),
                    **requester.audit_params(),
                    **({"jobs": len(new)} if len(new) > 1 else {}),
                },
            )
        raise refusal

    def _group_over(
        self,
        limits: Limits,
        before: Usage,
        admitted: list[tuple[NewJob, Estimate, Lane]],
        last: Estimate,
        resets_at: datetime,
    ) -> OverQuota | None:
        """For several jobs, the limit in words of the group so far as one job would
        read ("1 left today, this job needs 2"), rather than of its last job alone."""
        if not admitted:
            return None
        group = [estimate for _, estimate, _ in admitted] + [last]
        total = Estimate(
            sum(e.images for e in group),
            sum(e.gpu_seconds for e in group),
            sum(e.cost for e in group),
        )
        queued = dataclasses.replace(before, jobs_queued=before.jobs_queued + len(admitted))
        return check(limits, queued, total, resets_at, self.rules.pricing.currency)

    async def status(self, user_id: int, role_ids: Sequence[int] = ()) -> QuotaStatus:
        async with self._sessions() as session:
            limits = await self._limits(session, user_id, role_ids)
            usage, resets_at = await self._usage(session, user_id)
        return QuotaStatus(limits, usage, resets_at, self.rules.pricing.currency)

    async def policy(self, scope: QuotaScope, subject_id: int) -> Limits | None:
        """The override stored for a role or user; None when it has none."""
        async with self._sessions() as session:
            return limits_of(await _policy(session, scope, subject_id))

    async def policies(self) -> Sequence[QuotaPolicy]:
        """Every stored override, roles first."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(QuotaPolicy).order_by(QuotaPolicy.scope, QuotaPolicy.subject_id)
            )
            return rows.all()

    async def set_policy(
        self, scope: QuotaScope, subject_id: int, limits: Limits, actor: Actor
    ) -> None:
        """Store (replace) the override; its None limits inherit."""
        async with self._sessions.begin() as session:
            policy = await _policy(session, scope, subject_id)
            if policy is None:
                policy = QuotaPolicy(scope=scope, subject_id=subject_id)
                session.add(policy)
            policy.images_per_day = limits.images_per_day
            policy.gpu_seconds_per_day = limits.gpu_seconds_per_day
            policy.cost_per_day = limits.cost_per_day
            policy.jobs_queued = limits.jobs_queued
            policy.updated_at = utcnow()
            policy.updated_by = actor.user_id
            audit.record_by(
                session,
                actor,
                "quota.set",
                target=_subject(scope, subject_id),
                params=vars(limits),
            )

    async def reset_policy(self, scope: QuotaScope, subject_id: int, actor: Actor) -> bool:
        """Drop the override (back to the role or config default); False if there was none."""
        async with self._sessions.begin() as session:
            policy = await _policy(session, scope, subject_id)
            if policy is not None:
                await session.delete(policy)
            audit.record_by(
                session,
                actor,
                "quota.reset",
                "ok" if policy else "no-op",
                target=_subject(scope, subject_id),
            )
        return policy is not None

    async def _limits(self, session: AsyncSession, user_id: int, role_ids: Sequence[int]) -> Limits:
        """The member's limits from their roles' and their own overrides (one read)."""
        stored = (
            await session.scalars(
                select(QuotaPolicy).where(
                    or_(
                        (QuotaPolicy.scope == QuotaScope.ROLE)
                        & QuotaPolicy.subject_id.in_(role_ids),
                        (QuotaPolicy.scope == QuotaScope.USER)
                        & (QuotaPolicy.subject_id == user_id),
                    )
                )
            )
        ).all()
        roles = [limits_of(p) or Limits() for p in stored if p.scope == QuotaScope.ROLE]
        user = next((limits_of(p) for p in stored if p.scope == QuotaScope.USER), None)
        return effective_limits(self.rules.default, roles, user)

    async def _usage(self, session: AsyncSession, user_id: int) -> tuple[Usage, datetime]:
        """Today's settled use plus what the member's open jobs hold, in one read."""
        start, end = day_bounds(utcnow(), self.rules.zone)
        charged, held = ledger.charged_since(user_id, start), ledger.reserved(user_id)
        queued = (
            select(func.count())
            .select_from(Job)
            .where(Job.user_id == user_id, Job.state.in_([JobState.QUEUED, JobState.RUNNING]))
            .scalar_subquery()
        )
        row = (
            await session.execute(
                select(
                    charged.c.images + held.c.images,
                    charged.c.gpu_seconds + held.c.gpu_seconds,
                    charged.c.cost + held.c.cost,
                    queued,
                ).select_from(charged.join(held, true()))
            )
        ).one()
        images, gpu_seconds, cost, jobs_queued = row
        usage = Usage(
            images=int(images),
            gpu_seconds=float(gpu_seconds),
            cost=float(cost),
            jobs_queued=int(jobs_queued),
        )
        return usage, end

    async def _estimate(
        self, session: AsyncSession, model: str, work: int, images: int
    ) -> Estimate:
        """Scale the model's recent GPU seconds per unit of work to this job's work."""
        rows = await session.execute(
            select(Job.spec, Job.gpu_seconds)
            .where(Job.model == model, Job.state == JobState.SUCCEEDED, Job.gpu_seconds > 0)
            .order_by(Job.finished_at.desc())
            .limit(HISTORY_JOBS)
        )
        # The query leaves out jobs without GPU seconds; the test tells the type checker.
        history = [(work_of(spec), seconds) for spec, seconds in rows if seconds is not None]
        done = sum(units for units, _ in history)
        per_unit = (
            sum(seconds for _, seconds in history) / done
            if done
            else self.rules.default_gpu_seconds / REFERENCE_WORK
        )
        gpu_seconds = per_unit * work
        return Estimate(images, gpu_seconds, self.rules.pricing.cost(gpu_seconds))


async def _policy(session: AsyncSession, scope: QuotaScope, subject_id: int) -> QuotaPolicy | None:
    return await session.scalar(
        select(QuotaPolicy).where(QuotaPolicy.scope == scope, QuotaPolicy.subject_id == subject_id)
    )


def _subject(scope: QuotaScope, subject_id: int) -> str:
    return user_target(subject_id) if scope is QuotaScope.USER else f"role:{subject_id}"
