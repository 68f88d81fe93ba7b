"""Job rows and their state changes; each change writes its audit entry with it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from . import audit, ledger
from .ledger import FREE, Pricing
from .models import AuditEntry, Job, JobState, Lane, Output, User, utcnow


@dataclass(frozen=True)
class Requester:
    """Who asked for a job and where the answer goes."""

    user_id: int
    user_name: str
    guild_id: int | None = None
    channel_id: int | None = None
    interaction_id: int | None = None
    interaction_token: str | None = None
    # The member's Discord roles, for per-role quota overrides.
    role_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class NewOutput:
    index: int
    path: str
    sha256: str
    seed: int
    width: int
    height: int
    recipe: dict[str, Any]


class JobNotFound(LookupError):
    pass


async def upsert_user(session: AsyncSession, user_id: int, name: str | None = None) -> None:
    """Insert the user or refresh their name (when given), in one statement.

    A single upsert, not a read then an insert: two first commands from the same
    member arrive together, and the write also takes SQLite's write lock at the
    start of the transaction, so the rest of it cannot fail on a stale snapshot.
    On PostgreSQL it locks the user's row, which serialises that member's
    transactions the same way.
    """
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(User).values(id=user_id, name=name or str(user_id), created_at=utcnow())
    # Without a name to refresh, a no-op update still takes the lock.
    refresh = {"name": name} if name else {"id": statement.excluded.id}
    await session.execute(statement.on_conflict_do_update(index_elements=[User.id], set_=refresh))


def add_job(
    session: AsyncSession,
    job_id: str,
    requester: Requester,
    spec: dict[str, Any],
    model: str,
    seeds: list[int],
    lane: Lane = Lane.NORMAL,
) -> Job:
    """Add a queued job and its audit entry to the caller's transaction."""
    job = Job(
        id=job_id,
        user_id=requester.user_id,
        state=JobState.QUEUED,
        spec=spec,
        model=model,
        seeds=seeds,
        guild_id=requester.guild_id,
        channel_id=requester.channel_id,
        interaction_id=requester.interaction_id,
        interaction_token=requester.interaction_token,
        lane=lane,
        outputs=[],
    )
    session.add(job)
    audit.record(
        session, "job.queued", "ok", actor_id=requester.user_id,
        guild_id=requester.guild_id, channel_id=requester.channel_id, target=job_id,
        params={"model": model, "count": len(seeds), "lane": lane},
    )  # fmt: skip
    return job


class JobStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], pricing: Pricing = FREE) -> None:
        self._sessions = sessions
        self._pricing = pricing

    async def create(
        self, job_id: str, requester: Requester, spec: dict[str, Any], model: str, seeds: list[int]
    ) -> Job:
        """Write the job (and its user, on first sight) before anyone is told it is queued."""
        async with self._sessions.begin() as session:
            await upsert_user(session, requester.user_id, requester.user_name)
            return add_job(session, job_id, requester, spec, model, seeds)

    async def record_refusal(
        self,
        action: str,
        actor_id: int,
        guild_id: int | None,
        channel_id: int | None,
        reason: str,
    ) -> None:
        async with self._sessions.begin() as session:
            audit.record(
                session, action, "refused", actor_id=actor_id, guild_id=guild_id,
                channel_id=channel_id, params={"reason": reason},
            )  # fmt: skip

    async def get(self, job_id: str) -> Job:
        async with self._sessions() as session:
            job = await session.get(Job, job_id)
            if job is None:
                raise JobNotFound(job_id)
            return job

    async def audit_trail(self, target: str) -> Sequence[AuditEntry]:
        """Every audit entry about `target` (a job id), oldest first."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(AuditEntry).where(AuditEntry.target == target).order_by(AuditEntry.id)
            )
            return rows.all()

    async def unfinished(self) -> Sequence[Job]:
        """Queued and running jobs, oldest first: the queue to rebuild at start."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(Job)
                .where(Job.state.in_([JobState.QUEUED, JobState.RUNNING]))
                .order_by(Job.created_at, Job.id)
            )
            return rows.all()

    async def transition(
        self,
        job_id: str,
        state: JobState,
        outcome: str = "ok",
        actor_id: int | None = None,
        **fields: Any,
    ) -> Job:
        """Move a job to `state`, setting `fields`, with its audit entry in one transaction.

        The audit entry's actor is the job's owner unless `actor_id` names who acted.
        A failed or cancelled job's quota reservation is refunded in the same transaction.
        """
        async with self._sessions.begin() as session:
            job = await _transition(session, job_id, state, outcome, actor_id, **fields)
            if state in (JobState.FAILED, JobState.CANCELLED):
                await ledger.refund(session, job)
        return job

    async def succeed(self, job_id: str, gpu_seconds: float, outputs: list[NewOutput]) -> Job:
        """Record the images and settle the measured GPU time, all or nothing.

        One transaction, so a crash can neither charge a job that has no images
        nor leave images of a job that was never charged.
        """
        async with self._sessions.begin() as session:
            session.add_all(Output(job_id=job_id, **vars(output)) for output in outputs)
            job = await _transition(session, job_id, JobState.SUCCEEDED, gpu_seconds=gpu_seconds)
            await ledger.settle(session, job, len(outputs), self._pricing)
        return await self.get(job_id)

    async def mark_delivered(self, job_id: str, message_id: int | None) -> None:
        async with self._sessions.begin() as session:
            job = await session.get(Job, job_id)
            if job is not None:
                job.delivered_at = utcnow()
                job.message_id = message_id
                # The token is a credential for the reply; drop it once it is spent.
                job.interaction_token = None


async def _transition(
    session: AsyncSession,
    job_id: str,
    state: JobState,
    outcome: str = "ok",
    actor_id: int | None = None,
    **fields: Any,
) -> Job:
    job = await session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise JobNotFound(job_id)
    previous = job.state
    job.state = state
    if state is JobState.RUNNING:
        job.started_at = utcnow()
    elif state.finished:
        job.finished_at = utcnow()
    for name, value in fields.items():
        setattr(job, name, value)
    audit.record(
        session, f"job.{state}", outcome, actor_id=actor_id or job.user_id,
        guild_id=job.guild_id, channel_id=job.channel_id, target=job_id,
        params={"from": previous, **({"error": job.error} if job.error else {})},
    )  # fmt: skip
    return job
