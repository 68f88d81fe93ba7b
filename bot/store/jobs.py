"""Job rows and their state changes; each change writes its audit entry with it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NoReturn

from sqlalchemy import (
    ColumnElement,
    Integer,
    String,
    Update,
    and_,
    bindparam,
    case,
    delete,
    func,
    literal,
    or_,
    select,
    true,
    tuple_,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased, lazyload
from sqlalchemy.orm.attributes import set_committed_value

from ..jobs.scheduler import LANE_RANK
from ..jobs.spec import JobSpec, stored_batch_key
from . import audit, commands, ledger, uploads
from .db import is_transient
from .ledger import FREE, Pricing
from .models import (
    FINISHED,
    TRANSITIONS,
    AuditEntry,
    Job,
    JobState,
    Lane,
    Output,
    Reservation,
    UsageEntry,
    User,
    new_id,
    utcnow,
)

log = logging.getLogger(__name__)

# A run cut off this many times (the bot or the engine died during it) is failed,
# so a job that kills the process cannot loop for ever.
MAX_ATTEMPTS = 2
# PostgreSQL's advisory lock that admissions under a queue length limit take in turn
# (any number unique to this application; "AQ" for Atelier's queue).
QUEUE_LENGTH_LOCK = 0x4151
# PostgreSQL's channel on which each cancel request is announced as it commits (the
# payload is the job id only; the request itself is in the row), so the worker holding
# the job hears it at once rather than at its next poll.
CANCEL_CHANNEL = "atelier_cancel"
# How long a claim holds unless renewed, where the caller names none ([worker]
# lease_seconds).
DEFAULT_LEASE = timedelta(seconds=30)


def new_worker_id() -> str:
    """A name for this process as the holder of its claims, unique across hosts and
    restarts: the host, the process id, and a random part (a pid comes round again)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


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
    # The largest upload Discord accepts in the reply, in bytes (None: Discord's default).
    upload_limit: int | None = None
    # The journaled command (bot.store.commands) this job settles, if any.
    command_id: int | None = None
    # "discord", or "http" with the API key that acts for the member (never the key itself).
    client: str = "discord"
    api_key_id: int | None = None
    # An HTTP request is waiting on an open connection for this job's answer.
    synchronous: bool = False
    # The message that shows the job, when it exists before the job (a follow-up of a
    # multi-job command, the bot's reply to a member's message); edited as it goes.
    message_id: int | None = None
    # Asked in a channel Discord marks age-restricted (bot.moderation.images). Unknown
    # (a command completed after a restart, the HTTP API): False, the stricter policy.
    nsfw_channel: bool = False

    @classmethod
    def on_discord(
        cls,
        *,
        user_id: int,
        user_name: str,
        guild_id: int | None,
        channel_id: int | None,
        role_ids: Iterable[int],
        interaction_id: int | None = None,
        interaction_token: str | None = None,
        upload_limit: int | None = None,
        command_id: int | None = None,
        nsfw_channel: bool = False,
    ) -> Requester:
        """A member asking in Discord: by an interaction (its id and token answer it), by a
        journaled one completed after a restart (`command_id` settles it) or by a message."""
        return cls(
            user_id=user_id,
            user_name=user_name,
            guild_id=guild_id,
            channel_id=channel_id,
            interaction_id=interaction_id,
            interaction_token=interaction_token,
            role_ids=tuple(role_ids),
            upload_limit=upload_limit,
            command_id=command_id,
            nsfw_channel=nsfw_channel,
        )

    @classmethod
    def over_http(
        cls,
        *,
        user_id: int,
        user_name: str,
        guild_id: int | None,
        role_ids: Iterable[int],
        api_key_id: int,
        synchronous: bool,
    ) -> Requester:
        """A member asking through the HTTP API, by the key `api_key_id` that acts for them;
        `synchronous`: the request waits on its open connection for the answer."""
        return cls(
            user_id=user_id,
            user_name=user_name,
            guild_id=guild_id,
            role_ids=tuple(role_ids),
            client="http",
            api_key_id=api_key_id,
            synchronous=synchronous,
        )

    def job_columns(self) -> dict[str, Any]:
        """The columns of a job row that say who asked it and where it is answered."""
        return {
            "user_id": self.user_id,
            "guild_id": self.guild_id,
            "channel_id": self.channel_id,
            "interaction_id": self.interaction_id,
            "interaction_token": self.interaction_token,
            "message_id": self.message_id,
            "upload_limit": self.upload_limit,
            "client": self.client,
            "api_key_id": self.api_key_id,
            "synchronous": self.synchronous,
            "nsfw_channel": self.nsfw_channel,
        }

    def audit_params(self) -> dict[str, Any]:
        """What every audit entry of this requester's jobs says about the client."""
        if self.client == "discord":
            return {}
        return {"client": self.client, "key_id": self.api_key_id}


@dataclass(frozen=True)
class NewJob:
    """A job to queue: its id, who asked (and where it is shown), what to make."""

    job_id: str
    requester: Requester
    spec: JobSpec
    model: str
    seeds: list[int]
    # The result cache (bot.jobs.cache): what it makes, and the identical job in flight
    # whose result it waits for (it is not claimed meanwhile).
    result_key: str | None = None
    cached_from: str | None = None


@dataclass(frozen=True)
class NewOutput:
    index: int
    path: str
    sha256: str
    seed: int
    width: int
    height: int
    recipe: dict[str, Any]
    # Moderation flags, e.g. {"nsfw": true, "spoiler": true} for an image shown spoilered.
    flags: dict[str, Any] = field(default_factory=dict)


class JobNotFound(LookupError):
    pass


class QueueAtLength(Exception):
    """Queuing the jobs would put more than `[queue] max_length` in the queue."""

    def __init__(self, waiting: int) -> None:
        super().__init__(f"{waiting} jobs already wait")
        self.waiting = waiting


@dataclass(frozen=True)
class CancelRequest:
    """A running job's recorded request to stop (bot.store.models.Job.cancel_requested_at)."""

    # Who asked (None: the bot itself); the job's end is audited in their name.
    actor_id: int | None
    # Refunded in full (the bot stopped it), not charged the GPU time it used.
    refund: bool


class IllegalTransition(RuntimeError):
    """A state change from a state the caller did not expect; nothing was written."""

    def __init__(self, job_id: str, found: JobState, wanted: JobState) -> None:
        super().__init__(f"job {job_id}: refused {found} -> {wanted}")
        self.found = found


class LeaseLost(IllegalTransition):
    """The end of a run, refused because the claim is no longer this worker's: its lease
    expired and the reaper took the job back (it may run elsewhere now). Nothing was
    written, so nothing is charged or delivered for this run."""

    def __init__(self, job_id: str, found: JobState, wanted: JobState, holder: str | None) -> None:
        super().__init__(job_id, found, wanted)
        self.holder = holder  # who holds the job now (None: nobody, it waits or ended)


@dataclass(frozen=True)
class QueuedRow:
    """A waiting job as the scheduler needs it."""

    job_id: str
    user_id: int
    lane: Lane
    queued_at: datetime
    model: str
    # bot.jobs.spec.stored_batch_key of its spec: equal keys can share an engine request.
    batch_key: str
    images: int
    estimate: float | None  # the reserved GPU seconds; None without quotas
    # The member has waiting jobs after this one that were not read (a claim reads the
    # heads of the queues first, HEADS_READ).
    more_behind: bool = False


# Chooses the jobs of the next batch from the waiting rows and each member's recent
# GPU seconds (bot.jobs.scheduler); the store only claims what it is told. Given the
# heads of the queues only, it may answer None: then it is asked again with every row.
Chooser = Callable[[Sequence[QueuedRow], dict[int, float]], list[str] | None]

# How many of each member's first waiting jobs a claim reads, while the chooser says
# they do not decide the batch (None: all): the fair order takes a member's jobs in
# their own order, so a batch (a few images) is nearly always decided by the heads of
# the queues, and each row read costs time (about 50 microseconds when each spec was
# parsed and keyed; the rows now hold the key, Job.batch_key; bench/, item scale).
# Two per member already order every member's next job against the others'.
HEADS_READ = (2, 8, 64, None)
# How many times a claim asks `choose` again from the rows it read, when other workers
# took the jobs chosen, before it reads the queue again; how many reads a claim makes
# while it loses races (each lost one is another worker's claim, so the queue moves on),
# before it answers none and its worker waits for the next job queued; and how many
# times a claim starts over when part of a batch moved.
MAX_TURNS = 2
MAX_RACES = 10
MAX_READS = 3
# Workers that lose races are claiming the same fair next jobs as others at the same
# moment: each then passes over a random few of them (up to twice the rivals it has
# met lately, who count at most MAX_RIVALS: six choices), so they spread over the
# first jobs of the fair order instead of all taking its first one again. Those first
# jobs all start within moments of each other anyway; a worker that has lost no race
# for RIVALS_FORGOTTEN seconds takes the order as it is.
MAX_RIVALS = 3
RIVALS_FORGOTTEN = 10.0


async def upsert_user(session: AsyncSession, user_id: int, name: str | None = None) -> User:
    """Insert the user or refresh their name (when given), in one statement that also
    reads the row back.

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
    upsert = statement.on_conflict_do_update(index_elements=[User.id], set_=refresh)
    user: User | None = await session.scalar(
        upsert.returning(User), execution_options={"populate_existing": True}
    )
    assert user is not None  # inserted or updated: RETURNING gives the row either way
    return user


async def check_room(session: AsyncSession, adding: int, max_waiting: int | None) -> None:
    """Raise QueueAtLength when `adding` more jobs would pass `max_waiting` queued ones.

    Call it after the transaction's first write (the requester's upsert): SQLite then
    holds its write lock, so no other admission commits between this count and the
    caller's inserts. Counted before that write, concurrent submissions all saw room.
    PostgreSQL's upsert locks only the member's row, so other members' admissions
    wait on a lock of the queue's own, held until the transaction ends.
    """
    if max_waiting is None:
        return
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(func.pg_advisory_xact_lock(QUEUE_LENGTH_LOCK)))
    waiting = await session.scalar(
        select(func.count()).select_from(Job).where(Job.state == JobState.QUEUED)
    )
    if (waiting or 0) + adding > max_waiting:
        raise QueueAtLength(waiting or 0)


async def settle_command(session: AsyncSession, requester: Requester, outcome: str) -> None:
    """Settle the requester's journaled command in the caller's transaction (raises
    commands.AlreadyHandled when an earlier run did, which rolls the transaction back)."""
    if requester.command_id is not None:
        await commands.settle(session, requester.command_id, outcome)


def queued_outcome(new: Sequence[NewJob]) -> str:
    """How a command that queued `new` is settled in the journal."""
    return "queued " + " ".join(n.job_id for n in new)


def add_job(
    session: AsyncSession,
    job_id: str,
    requester: Requester,
    spec: JobSpec,
    model: str,
    seeds: list[int],
    lane: Lane = Lane.NORMAL,
    *,
    result_key: str | None = None,
    cached_from: str | None = None,
) -> Job:
    """Add a queued job and its audit entry to the caller's transaction."""
    job = Job(
        id=job_id,
        state=JobState.QUEUED,
        spec=spec,
        model=model,
        seeds=seeds,
        lane=lane,
        **requester.job_columns(),
        result_key=result_key,
        cached_from=cached_from,
        outputs=[],
    )
    session.add(job)
    audit.record(
        session,
        "job.queued",
        "ok",
        actor_id=requester.user_id,
        guild_id=requester.guild_id,
        channel_id=requester.channel_id,
        target=job_id,
        params={
            "model": model,
            "count": len(seeds),
            "lane": lane,
            **requester.audit_params(),
            **({"waits_for": cached_from} if cached_from else {}),
        },
    )
    return job


class JobStore:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        pricing: Pricing = FREE,
        worker_id: str | None = None,
    ) -> None:
        self._sessions = sessions
        self._pricing = pricing
        # The claimant this store's claims name: one per process (new_worker_id). Every
        # end of a run it records is a compare-and-set on it.
        self.worker_id = worker_id or new_worker_id()
        # Claims in this process go one at a time; the compare-and-set guards the rest.
        self._claiming = asyncio.Lock()
        self._rivals = _Rivals()

    async def create(
        self, job_id: str, requester: Requester, spec: JobSpec, model: str, seeds: list[int]
    ) -> Job:
        """Write the job (and its user, on first sight) before anyone is told it is queued."""
        (job,) = await self.create_many([NewJob(job_id, requester, spec, model, seeds)])
        return job

    async def create_many(self, new: Sequence[NewJob], max_waiting: int | None = None) -> list[Job]:
        """Write several jobs of one command in one transaction (all or none); the first
        one's requester settles the command, once. QueueAtLength when they would pass
        `max_waiting` queued jobs."""
        async with self._sessions.begin() as session:
            await upsert_user(session, new[0].requester.user_id, new[0].requester.user_name)
            await check_room(session, len(new), max_waiting)
            jobs = [
                add_job(
                    session,
                    n.job_id,
                    n.requester,
                    n.spec,
                    n.model,
                    n.seeds,
                    result_key=n.result_key,
                    cached_from=n.cached_from,
                )
                for n in new
            ]
            await settle_command(session, new[0].requester, queued_outcome(new))
            return jobs

    async def create_blocked(
        self,
        job_id: str,
        requester: Requester,
        spec: JobSpec,
        model: str,
        seeds: list[int],
        reason: str,
    ) -> Job:
        """Record a job moderation withheld at the door: never queued, never charged.

        For clients that are answered with a job of their own (the HTTP API reports
        it as CONTENT_FILTERED); the audit entry says why.
        """
        async with self._sessions.begin() as session:
            await upsert_user(session, requester.user_id, requester.user_name)
            now = utcnow()
            job = Job(
                id=job_id,
                user_id=requester.user_id,
                state=JobState.BLOCKED,
                spec=spec,
                model=model,
                seeds=seeds,
                error=reason,
                guild_id=requester.guild_id,
                channel_id=requester.channel_id,
                created_at=now,
                finished_at=now,
                # Nothing to deliver: the answer is the refusal the client already has.
                delivered_at=now,
                client=requester.client,
                api_key_id=requester.api_key_id,
                synchronous=requester.synchronous,
                outputs=[],
            )
            session.add(job)
            audit.record(
                session,
                "job.blocked",
                "blocked",
                actor_id=requester.user_id,
                guild_id=requester.guild_id,
                channel_id=requester.channel_id,
                target=job_id,
                params={"reason": reason, "model": model, **requester.audit_params()},
            )
        return job

    async def uploads_in_use(self, paths: Sequence[str], other_than: str) -> set[str]:
        """Those of `paths` (uploads) that a job other than `other_than` still reads."""
        async with self._sessions() as session:
            return await uploads.uploads_in_use(session, paths, [other_than])

    async def reserved_seconds(self, job_id: str) -> float | None:
        """The GPU seconds a waiting or running job reserved; None without a reservation."""
        async with self._sessions() as session:
            return await session.scalar(
                select(Reservation.gpu_seconds).where(Reservation.job_id == job_id)
            )

    async def record_refusal(
        self,
        action: str,
        actor_id: int,
        guild_id: int | None,
        channel_id: int | None,
        reason: str,
        params: dict[str, Any] | None = None,
        kind: str | None = None,
    ) -> None:
        """A refusal's audit entry; `kind` names its family for the metrics."""
        params = {"reason": reason, **(params or {})} | ({"kind": kind} if kind else {})
        async with self._sessions.begin() as session:
            audit.record(
                session,
                action,
                "refused",
                actor_id=actor_id,
                guild_id=guild_id,
                channel_id=channel_id,
                params=params,
            )

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
        """Queued and running jobs, oldest first."""
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
        expected: JobState | frozenset[JobState],
        state: JobState,
        outcome: str = "ok",
        actor_id: int | None = None,
        **fields: Any,
    ) -> Job:
        """Move a job from `expected` to `state`, setting `fields`, with its audit entry,
        in one transaction; IllegalTransition (logged, nothing written) otherwise.

        The audit entry's actor is the job's owner unless `actor_id` names who acted.
        A failed, cancelled or blocked job's reservation is refunded in the same
        transaction.
        """
        async with self._sessions.begin() as session:
            job = await _transition(
                session, job_id, expected, state, outcome, actor_id, self.worker_id, **fields
            )
            if state in (JobState.FAILED, JobState.CANCELLED, JobState.BLOCKED):
                await ledger.refund(session, job)
        return job

    async def succeed(
        self,
        job_id: str,
        gpu_seconds: float,
        outputs: list[NewOutput],
        state: JobState = JobState.SUCCEEDED,
        **fields: Any,
    ) -> Job:
        """Record the images and settle the measured GPU time, all or nothing.

        One transaction, so a crash can neither charge a job that has no images
        nor leave images of a job that was never charged.
        """
        async with self._sessions.begin() as session:
            images = [Output(job_id=job_id, **vars(output)) for output in outputs]
            session.add_all(images)  # flushed as the transition's statement runs
            job = await _transition(
                session,
                job_id,
                JobState.RUNNING,
                state,
                holder=self.worker_id,
                gpu_seconds=gpu_seconds,
                **fields,
            )
            set_committed_value(job, "outputs", sorted(images, key=lambda image: image.index))
            await ledger.settle(session, job, len(outputs), self._pricing)
        return job

    async def cancel_started(
        self,
        job_id: str,
        gpu_seconds: float,
        actor_id: int | None,
        reason: str,
        *,
        charge: bool = True,
    ) -> Job:
        """A running job stopped on request, in one transaction with the ledger: the GPU
        time its images used before it stopped is charged (its member saw the previews;
        no images are counted), the rest of its reservation released; with none used (it
        stopped before its first step), or without `charge`, it is refunded in full."""
        async with self._sessions.begin() as session:
            job = await _transition(
                session,
                job_id,
                JobState.RUNNING,
                JobState.CANCELLED,
                "cancelled",
                actor_id=actor_id,
                holder=self.worker_id,
                error=reason,
                gpu_seconds=gpu_seconds,
            )
            if charge and gpu_seconds > 0:
                await ledger.settle(session, job, 0, self._pricing)
            else:
                await ledger.refund(session, job)
        return job

    async def request_cancel(self, job_id: str, actor_id: int | None, *, refund: bool) -> bool:
        """Record that a running job is asked to stop, with its audit entry, in one
        transaction; the worker holding it (in this process or another) sees the request
        at its next poll and stops the job, which then ends through `cancel_started`.

        A compare-and-set on the running job without a request: False when one was
        recorded already (the first request's actor and refund stand); IllegalTransition
        when the job is no longer running (it ended, or went back to the queue).
        """
        async with self._sessions.begin() as session:
            moved = (
                await session.execute(
                    update(Job)
                    .where(
                        Job.id == job_id,
                        Job.state == JobState.RUNNING,
                        Job.cancel_requested_at.is_(None),
                    )
                    .values(
                        cancel_requested_at=utcnow(),
                        cancel_requested_by=actor_id,
                        cancel_refund=refund,
                    )
                    .returning(Job.user_id, Job.guild_id, Job.channel_id, Job.device)
                    .execution_options(synchronize_session=False)
                )
            ).one_or_none()
            if moved is None:
                found = await _state_of(session, job_id)
                if found is JobState.RUNNING:
                    return False
                _refused(job_id, found, JobState.CANCELLED, {JobState.RUNNING})
            user_id, guild_id, channel_id, device = moved
            audit.record(
                session,
                "job.cancel_requested",
                "ok",
                actor_id=actor_id or user_id,
                guild_id=guild_id,
                channel_id=channel_id,
                target=job_id,
                params={"device": device, "refund": refund},
            )
            if session.get_bind().dialect.name == "postgresql":
                # Delivered as the transaction commits: never for a request rolled back.
                await session.execute(select(func.pg_notify(CANCEL_CHANNEL, job_id)))
            return True

    async def cancel_requests(self, job_ids: Sequence[str]) -> dict[str, CancelRequest]:
        """The running jobs among `job_ids` that were asked to stop, by id."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(Job.id, Job.cancel_requested_by, Job.cancel_refund).where(
                    Job.id.in_(job_ids),
                    Job.state == JobState.RUNNING,
                    Job.cancel_requested_at.is_not(None),
                )
            )
            return {job_id: CancelRequest(actor_id, refund) for job_id, actor_id, refund in rows}

    @asynccontextmanager
    async def hearing_cancels(self, heard: Callable[[str], None]) -> AsyncIterator[bool]:
        """Meanwhile `heard(job_id)` is called as each cancel request commits, made by any
        process: PostgreSQL's LISTEN on CANCEL_CHANNEL, on a connection held until the
        end. Yields whether it listens: not on SQLite (one process, whose pool intake
        wakes directly), nor where the LISTEN failed (logged). The caller's poll of
        `cancel_requests` is the guarantee either way; this only makes it prompt.
        """
        engine: AsyncEngine = self._sessions.kw["bind"]
        if engine.dialect.name != "postgresql":
            yield False
            return

        def notified(_connection: object, _pid: int, _channel: str, job_id: str) -> None:
            heard(job_id)

        async with contextlib.AsyncExitStack() as stack:
            try:
                connection = await stack.enter_async_context(engine.connect())
                listener = (await connection.get_raw_connection()).driver_connection
                assert listener is not None  # a live connection, just checked out
                await listener.add_listener(CANCEL_CHANNEL, notified)
            # Whatever the LISTEN meets (SQLAlchemy's errors or asyncpg's own), polling
            # still stops the job: the pool must not go down with it.
            except Exception as error:
                log.warning("cannot listen for cancel requests (%s); polling only", error)
                listening = False
            else:
                stack.push_async_callback(listener.remove_listener, CANCEL_CHANNEL, notified)
                listening = True
            yield listening

    async def block(
        self,
        job_id: str,
        reason: str,
        moderation: dict[str, Any],
        gpu_seconds: float = 0.0,
        outputs: Sequence[NewOutput] = (),
        charge: bool = False,
    ) -> Job:
        """A running job the image filter withheld: `blocked`, with the classifier's
        verdicts, in one transaction with its kept `outputs` (files kept for review) and
        the ledger: the measured GPU time charged with `charge`, else refunded."""
        async with self._sessions.begin() as session:
            session.add_all(Output(job_id=job_id, **vars(output)) for output in outputs)
            job = await _transition(
                session,
                job_id,
                JobState.RUNNING,
                JobState.BLOCKED,
                "blocked",
                holder=self.worker_id,
                error=reason,
                moderation=moderation,
                gpu_seconds=gpu_seconds,
            )
            if charge:
                await ledger.settle(
                    session, job, len(moderation.get("outputs") or ()), self._pricing
                )
            else:
                await ledger.refund(session, job)
        return await self.get(job_id)

    async def claim(
        self,
        device: str,
        choose: Chooser,
        fair_window: timedelta,
        *,
        lease: timedelta = DEFAULT_LEASE,
        models: Collection[str] | None = None,
    ) -> list[Job]:
        """Mark the next batch running on `device`, in one transaction; [] when none waits.
        The claimed jobs share a new `batch_id`, the id of the engine request they are
        claimed for (one cancelled before the request is sent keeps it, unrun), and are
        held by this store's worker for `lease` (renewed by `renew_leases`). Only jobs
        of `models` (the ones this worker serves; None: any) are considered.

        The rows are picked by `choose` and then moved with a compare-and-set
        (`UPDATE ... WHERE state = 'queued' RETURNING`) whose rows are counted. Jobs
        another worker took meanwhile (none of the batch moved) are set aside and
        `choose` asked again from the rows already read, as if they were running: with
        several workers on one queue, each picks the same fair next job, and one read
        then serves a turn or two of the race; a job set aside that was a member's last
        row read (more wait behind it) sends the claim back to read instead. A worker
        that has met rivals lately also passes over a random few of the next choices
        (MAX_RIVALS), so that workers claiming at the same moment spread over the first
        jobs of the fair order. The losing statement waited for the winner's commit
        (PostgreSQL's row lock; SQLite's one writer), so it reads what the winner wrote;
        after MAX_TURNS the queue is read again in the same transaction (on SQLite,
        under the write lock the first compare-and-set took, so the next one cannot
        lose). A batch of which only part moved is rolled back and the claim starts
        over; a transient database error (a deadlock) rolls it back and claims again.
        """
        async with self._claiming:
            for _ in range(MAX_READS):
                try:
                    async with self._sessions.begin() as session:
                        jobs = await self._claim_in(
                            session, device, choose, fair_window, lease, models
                        )
                        if jobs is not None:
                            return jobs
                        await session.rollback()  # part of a batch had moved
                except DBAPIError as error:
                    # Two workers' batches that overlap can deadlock on PostgreSQL (the
                    # read takes no locks): one is rolled back, and claims afresh.
                    if not is_transient(error):
                        raise
                    log.info("claim met a conflict (%s); claiming again", error.orig)
        return []

    async def _claim_in(
        self,
        session: AsyncSession,
        device: str,
        choose: Chooser,
        fair_window: timedelta,
        lease: timedelta,
        models: Collection[str] | None,
    ) -> list[Job] | None:
        """claim's transaction: the jobs claimed ([] when none waits, or none this
        worker takes); None when part of a batch moved (to roll back)."""
        for _ in range(MAX_RACES):
            waiting, served = await _fair_inputs(session, fair_window, models, HEADS_READ[0])
            if not waiting:
                return []
            chosen = choose(waiting, served)
            for heads in HEADS_READ[1:]:
                if chosen is not None:
                    break
                if not (waiting := await _waiting(session, models, heads)):
                    return []  # the queue emptied between two reads
                chosen = choose(waiting, served)
            if chosen is None:
                continue  # every row read did not decide (the queue moved): read again
            if not chosen:
                return []  # nothing waiting that this worker takes
            waiting, served, chosen = _pass_over(
                waiting, served, chosen, choose, _spread(self._rivals.lately())
            )
            for _ in range(MAX_TURNS):
                moved = await self._move_claimed(session, chosen, device, lease)
                if len(moved) == len(chosen):
                    self._rivals.won()
                    jobs = [moved[job_id] for job_id in chosen]
                    for job in jobs:
                        _audit_change(session, job, JobState.QUEUED, "ok", None)
                    return jobs
                if moved:
                    return None
                self._rivals.met()
                if (aside := _set_aside(waiting, served, chosen)) is None:
                    break  # the rows left no longer decide: read the queue again
                waiting, served = aside
                if not (chosen := choose(waiting, served) if waiting else None):
                    break  # none left, or they do not decide: read the queue again
                waiting, served, chosen = _pass_over(
                    waiting, served, chosen, choose, _spread(self._rivals.lately())
                )
            log.info("claim raced other workers; reading the queue again")
        return []

    async def _move_claimed(
        self, session: AsyncSession, chosen: list[str], device: str, lease: timedelta
    ) -> dict[str, Job]:
        """The compare-and-set of a claim: those of `chosen` still queued, now running on
        `device` and held by this worker, as one new batch."""
        now = utcnow()
        moved = await _move(
            session,
            update(Job)
            .where(Job.id.in_(chosen), Job.state == JobState.QUEUED)
            .values(
                state=JobState.RUNNING,
                started_at=now,
                device=device,
                attempts=Job.attempts + 1,
                batch_id=new_id(),
                claimed_by=self.worker_id,
                lease_until=now + lease,
            ),
        )
        return {job.id: job for job in moved}

    async def renew_leases(self, job_ids: Collection[str], lease: timedelta) -> set[str]:
        """The heartbeat: hold the running jobs of `job_ids` that this worker still holds
        for `lease` more, in one statement; those it renewed. One missing was reaped (its
        lease ran out first): this worker may record nothing more for it."""
        async with self._sessions.begin() as session:
            renewed = await session.scalars(
                update(Job)
                .where(
                    Job.id.in_(job_ids),
                    Job.state == JobState.RUNNING,
                    Job.claimed_by == self.worker_id,
                )
                .values(lease_until=utcnow() + lease)
                .returning(Job.id)
                .execution_options(synchronize_session=False)
            )
            return set(renewed)

    async def reap_expired(self) -> list[Job]:
        """The reaper: running jobs whose lease ran out (their worker was killed, or cut
        off from the database) go back to the queue, the attempt counted, or fail
        (refunded) at MAX_ATTEMPTS, or are cancelled when asked to stop; what each became.

        Any process may run it, any number at once: each move is a compare-and-set on
        the lease still being out, so a heartbeat that renews it in between wins, and a
        job another reaper moved first is left (no double requeue, no double refund).
        A live lease, this process's or another worker's, is never touched.
        """
        async with self._sessions() as session:
            expired = (
                await session.execute(
                    select(Job.id, Job.claimed_by).where(
                        Job.state == JobState.RUNNING, Job.lease_until < utcnow()
                    )
                )
            ).all()
        reaped = []
        for job_id, holder in expired:
            reason = f"its worker {holder} stopped renewing its claim"
            with contextlib.suppress(IllegalTransition):
                reaped.append(await self.retry_or_fail(job_id, reason, "its worker", expired=True))
        return reaped

    async def retry_or_fail(
        self, job_id: str, reason: str, crashes: str = "the bot", *, expired: bool = False
    ) -> Job:
        """Put a running job whose run was cut off back in the queue, or fail it for good
        when this was its last attempt; one asked to stop is cancelled (refunded: its
        images were never made), not run again. Only this worker's claim is moved (a
        compare-and-set on it), or with `expired` (the reaper) only a claim whose lease
        has run out, whoever held it."""
        claim: dict[str, Any] = {"lease_expired": True} if expired else {"holder": self.worker_id}
        async with self._sessions.begin() as session:
            found = (
                await session.execute(
                    select(Job.attempts, Job.cancel_requested_at, Job.cancel_requested_by).where(
                        Job.id == job_id
                    )
                )
            ).one_or_none()
            if found is None:
                raise JobNotFound(job_id)
            attempts, cancel_requested_at, cancel_requested_by = found
            if cancel_requested_at is not None:
                cancelled = await _transition(
                    session,
                    job_id,
                    JobState.RUNNING,
                    JobState.CANCELLED,
                    "cancelled",
                    actor_id=cancel_requested_by,
                    **claim,
                    error=f"cancelled ({reason})",
                )
                await ledger.refund(session, cancelled)
                return cancelled
            if attempts < MAX_ATTEMPTS:
                return await _transition(
                    session,
                    job_id,
                    JobState.RUNNING,
                    JobState.QUEUED,
                    "requeued",
                    **claim,
                    error=reason,
                )
            failed = await _transition(
                session,
                job_id,
                JobState.RUNNING,
                JobState.FAILED,
                "error",
                **claim,
                error=f"{reason} (it stopped {crashes} {attempts} times; not retried)",
            )
            await ledger.refund(session, failed)
            return failed

    async def return_to_queue(self, job_id: str) -> None:
        """A run given back unfinished at a graceful stop: queued again, the attempt
        not counted against it."""
        async with self._sessions.begin() as session:
            await _transition(
                session,
                job_id,
                JobState.RUNNING,
                JobState.QUEUED,
                "requeued",
                holder=self.worker_id,
                attempts=Job.attempts - 1,
                error="the bot stopped before it finished",
            )

    async def record_discarded(self, job_id: str, lost: LeaseLost, outcome: str) -> None:
        """Audit a run's end that this worker could not record because it lost the job's
        claim (LeaseLost): `outcome` says what the run came to; it is neither charged nor
        delivered."""
        async with self._sessions.begin() as session:
            audit.record(
                session,
                "job.result_discarded",
                "refused",
                target=job_id,
                params={
                    "worker": self.worker_id,
                    "outcome": outcome,
                    "state": lost.found,
                    "held_by": lost.holder,
                },
            )

    async def waiting_snapshot(
        self, fair_window: timedelta
    ) -> tuple[list[QueuedRow], dict[int, float]]:
        """The waiting rows and each member's recent GPU seconds, as a claim sees them."""
        async with self._sessions() as session:
            return await _fair_inputs(session, fair_window)

    async def waiting_count(self) -> int:
        async with self._sessions() as session:
            count = await session.scalar(
                select(func.count()).select_from(Job).where(Job.state == JobState.QUEUED)
            )
            return count or 0

    async def finished_per_minute(self, period: timedelta) -> float:
        """Jobs finished per minute over the last `period`: the queue's measured pace."""
        async with self._sessions() as session:
            done = await session.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.state.in_(FINISHED), Job.finished_at >= utcnow() - period)
            )
        return (done or 0) / (period / timedelta(minutes=1))

    async def live_engines(self, within: timedelta) -> set[tuple[str, str]]:
        """The engines working the queue now, wherever they run, as (worker id, device):
        each that holds an unexpired lease or finished a job in the last `within`. Read
        from the jobs' claims, so a worker that claimed nothing lately is not counted."""
        now = utcnow()
        async with self._sessions() as session:
            rows = await session.execute(
                select(Job.claimed_by, Job.device)
                .distinct()
                .where(
                    Job.claimed_by.is_not(None),
                    Job.device.is_not(None),
                    or_(
                        and_(Job.state == JobState.RUNNING, Job.lease_until >= now),
                        and_(Job.state.in_(FINISHED), Job.finished_at >= now - within),
                    ),
                )
            )
            return {(str(worker), str(device)) for worker, device in rows}

    async def undelivered(self) -> Sequence[Job]:
        """Finished jobs whose answer Discord has not accepted yet, oldest first."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(Job)
                .where(Job.state.in_(FINISHED), Job.delivered_at.is_(None))
                .order_by(Job.finished_at, Job.id)
            )
            return rows.all()

    async def by_message(self, message_id: int) -> Job | None:
        """The job a bot message shows (its reply or result), if any."""
        async with self._sessions() as session:
            return await session.scalar(select(Job).where(Job.message_id == message_id).limit(1))

    async def unfinished_of(self, user_id: int) -> Sequence[Job]:
        """A member's queued and running jobs, newest first."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(Job)
                .where(Job.user_id == user_id, Job.state.in_([JobState.QUEUED, JobState.RUNNING]))
                .order_by(Job.created_at.desc(), Job.id.desc())
            )
            return rows.all()

    async def history(self, user_id: int, limit: int, offset: int = 0) -> tuple[Sequence[Job], int]:
        """A page of a member's jobs, newest first, and how many they have in all."""
        async with self._sessions() as session:
            total = await session.scalar(
                select(func.count()).select_from(Job).where(Job.user_id == user_id)
            )
            rows = await session.scalars(
                select(Job)
                .where(Job.user_id == user_id)
                .order_by(Job.created_at.desc(), Job.id.desc())
                .limit(limit)
                .offset(offset)
            )
            return rows.all(), total or 0

    async def delete_outputs(
        self, job_id: str, actor_id: int, guild_id: int | None, channel_id: int | None
    ) -> list[str]:
        """Forget a finished job's images (🗑️): its output rows go, with an audit entry,
        in one transaction; the caller removes the files after (a crash in between
        leaves stray files, never rows pointing at missing ones). Their paths."""
        async with self._sessions.begin() as session:
            job = await session.get(Job, job_id)
            if job is None:
                raise JobNotFound(job_id)
            paths = [output.path for output in job.outputs]
            await session.execute(delete(Output).where(Output.job_id == job_id))
            audit.record(
                session,
                "job.deleted",
                "ok",
                actor_id=actor_id,
                guild_id=guild_id,
                channel_id=channel_id,
                target=job_id,
                params={"images": len(paths), "owner": job.user_id, "message_id": job.message_id},
            )
            return paths

    async def record_message(self, job_id: str, message_id: int) -> None:
        """The id of the job's reply, once Discord showed it (needed to edit it after
        a restart through the interaction's webhook)."""
        async with self._sessions.begin() as session:
            await session.execute(update(Job).where(Job.id == job_id).values(message_id=message_id))

    async def stop_waiting(self, job_id: str, waited: float) -> None:
        """An HTTP request stopped waiting for its job after `waited` seconds and answered
        with the job's id: the job is no longer its connection's, so neither that client
        leaving nor a restart cancels it. A compare-and-set, audited with it."""
        async with self._sessions.begin() as session:
            moved = (
                await session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.synchronous.is_(True))
                    .values(synchronous=False)
                    .returning(Job.user_id, Job.api_key_id)
                    .execution_options(synchronize_session=False)
                )
            ).one_or_none()
            if moved is not None:
                user_id, key_id = moved
                audit.record(
                    session,
                    "job.wait_ended",
                    "ok",
                    actor_id=user_id,
                    target=job_id,
                    params={"waited": waited, "key_id": key_id},
                )

    async def mark_delivered(self, job_id: str, message_id: int | None, how: str) -> bool:
        """Record that Discord accepted the job's answer; False if it was already (a
        second delivery is refused, never recorded twice)."""
        async with self._sessions.begin() as session:
            # The compare-and-set returns what the audit entry names, in one statement.
            moved = (
                await session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.delivered_at.is_(None))
                    .values(delivered_at=utcnow(), message_id=message_id, interaction_token=None)
                    .returning(Job.user_id, Job.guild_id, Job.channel_id, Job.state)
                    .execution_options(synchronize_session=False)
                )
            ).one_or_none()
            if moved is None:
                return False
            user_id, guild_id, channel_id, state = moved
            audit.record(
                session,
                "job.delivered",
                "ok",
                actor_id=user_id,
                guild_id=guild_id,
                channel_id=channel_id,
                target=job_id,
                params={"how": how, "message_id": message_id, "state": state},
            )
            return True


def _claimable_where(every_model: bool) -> list[ColumnElement[bool]]:
    # A job waiting for an identical one's result (bot.jobs.cache) is not claimed, and
    # a worker claims only the jobs of models it serves (the parameter "models").
    where = [Job.state == JobState.QUEUED, Job.cached_from.is_(None)]
    return where if every_model else [*where, Job.model.in_(bindparam("models", expanding=True))]


def _models_param(models: Collection[str] | None) -> dict[str, Any]:
    return {} if models is None else {"models": list(models)}


async def _waiting(
    session: AsyncSession, models: Collection[str] | None = None, heads: int | None = None
) -> list[QueuedRow]:
    """The waiting rows; with `heads`, only each member's first `heads` in the member's
    own order (bot.jobs.scheduler), the last one read marked when more wait."""
    # Executed on the session's connection, not as an ORM statement: the rows are plain
    # columns, and the ORM's loading of ~200 of them was a fifth of a claim's time.
    connection = await session.connection()
    params = _models_param(models)
    if heads is None:
        query = _waiting_query(models is None)
    else:
        # One more than `heads` per lane, to tell who has more behind.
        query = _lane_heads_query(connection.dialect.name, models is None, heads + 1)
    # The scheduler's columns, never the spec: parsing ~200 specs and keying them was
    # most of a claim's time (30 of 37 ms with 10 000 waiting; bench/, item scale).
    # One statement: its rows are all claimable as one snapshot of the queue saw them.
    rows: list[_Row] = list(await connection.execute(query, params))
    behind: set[str] = set()
    if heads is not None:
        rows, behind = _heads_of(rows, heads)
    unkeyed = await _unkeyed_specs(session, [row[0] for row in rows if None in row[5:7]])
    return [
        QueuedRow(
            job_id,
            user_id,
            lane,
            at,
            model,
            key if key is not None else stored_batch_key(unkeyed[job_id]),
            images if images is not None else unkeyed[job_id].count,
            estimate,
            job_id in behind,
        )
        for job_id, user_id, lane, at, model, key, images, estimate in rows
    ]


# A waiting row as the scheduler reads it: id, whose, lane, queued at, model, batch key
# and image count (None on rows an older release wrote), reserved GPU seconds.
_Row = tuple[str, int, Lane, datetime, str, str | None, int | None, float | None]


def _scheduler_rows() -> Any:
    """The scheduler's columns of waiting rows, in queue order (to add a WHERE to)."""
    return (
        select(
            Job.id,
            Job.user_id,
            Job.lane,
            Job.created_at,
            Job.model,
            # Set with every spec (Job._keep_spec_columns, migration 0014): None only
            # on rows an older release wrote (_unkeyed_specs).
            type_coerce(Job.batch_key, String),
            type_coerce(Job.image_count, Integer),
            Reservation.gpu_seconds,
        )
        .outerjoin(Reservation, Reservation.job_id == Job.id)
        .order_by(Job.created_at, Job.id)
    )


@functools.cache
def _waiting_query(every_model: bool) -> Any:
    """_waiting's statement for every claimable row (of the models in the parameter
    "models" unless `every_model`), built once: building it each time cost about as
    much as running it (bench/, item scale)."""
    return _scheduler_rows().where(*_claimable_where(every_model))


async def _unkeyed_specs(session: AsyncSession, job_ids: list[str]) -> dict[str, JobSpec]:
    """The specs of waiting rows written without the scheduler's columns: by a release
    before them still running during an upgrade (a front door queueing while a new
    worker claims), or by hand. Rare, so their specs are read only then."""
    if not job_ids:
        return {}
    rows = await session.execute(select(Job.id, Job.spec).where(Job.id.in_(job_ids)))
    return {job_id: spec for job_id, spec in rows}


@functools.cache
def _lane_heads_query(dialect: str, every_model: bool, count: int) -> Any:
    """The scheduler's rows of the first `count` waiting jobs of each member in each
    lane, read through the (state, user_id, lane, created_at, id) index: one short
    index range per member and lane instead of ranking every waiting row (with 10 000
    waiting, a window over them all took 40 ms on SQLite and more on PostgreSQL;
    bench/, item scale). A member's first `count` in their own order are among their
    lanes' first `count`.

    Built once per database, model filter and count (its models are a parameter,
    "models"): building its aliases and recursive CTE took longer than the database
    took to run it (7 of 18 ms per claim on SQLite with 10 000 waiting, profiled). The
    rows are not filtered again beside the ids: with the queue's conditions there too,
    both databases (PostgreSQL before its statistics caught up with a growing table)
    scanned every waiting row, comparing each with every id."""
    queues = _queues()
    head = aliased(Job, name="head")
    first = (
        select(head.id)
        .where(
            head.state == JobState.QUEUED,
            head.cached_from.is_(None),
            head.user_id == queues.c.user_id,
            head.lane == queues.c.lane,
            *([] if every_model else [head.model.in_(bindparam("models", expanding=True))]),
        )
        .order_by(head.created_at, head.id)
        .limit(count)
    )
    if dialect == "postgresql":
        lateral = first.lateral("first")
        ids: Any = select(lateral.c.id).select_from(queues).join(lateral, true())
    else:
        # SQLite has no LATERAL: the same short range, as a correlated IN per queue.
        ids = select(Job.id).select_from(queues).join(Job, Job.id.in_(first.scalar_subquery()))
    return _scheduler_rows().where(Job.id.in_(ids))


def _queues() -> Any:
    """The members and lanes with waiting jobs, skipping through the (state, user_id,
    lane, ...) index from one pair to the next: one index probe per queue instead of
    reading every waiting row (with 10 000 waiting from 100 members, the lane heads'
    query took 8.6 ms on SQLite and 7.0 on PostgreSQL with a DISTINCT over them, 2.6
    and 2.7 with this; bench/, item scale). A queue whose jobs are all parked or of
    models not served is listed too; its heads read finds none."""
    step = aliased(Job, name="step")
    pair = tuple_(step.user_id, step.lane)

    def after(bound: Any) -> Any:
        # The next pair's first row; correlated to the last pair found when bounded.
        following = select(step.id).where(step.state == JobState.QUEUED)
        if bound is not None:
            following = following.where(pair > bound)
        return following.order_by(step.user_id, step.lane).limit(1).scalar_subquery()

    found = aliased(Job, name="found")
    first = select(found.user_id, found.lane).where(found.id == after(None))
    queues = first.cte("queues", recursive=True)
    found_next = aliased(Job, name="found_next")
    return queues.union_all(
        select(found_next.user_id, found_next.lane)
        .select_from(queues)
        .join(found_next, found_next.id == after(tuple_(queues.c.user_id, queues.c.lane)))
    )


@dataclass
class _Rivals:
    """The other workers a store's claims met lately: one more per race lost (at most
    MAX_RIVALS), one fewer per claim won, none once RIVALS_FORGOTTEN seconds pass
    without a race lost."""

    count: int = 0
    last_met: float = 0.0

    def met(self) -> None:
        self.count = min(self.lately() + 1, MAX_RIVALS)
        self.last_met = time.monotonic()

    def won(self) -> None:
        self.count = max(self.count - 1, 0)

    def lately(self) -> int:
        return self.count if time.monotonic() - self.last_met < RIVALS_FORGOTTEN else 0


def _spread(rivals: int) -> int:
    """How many of the next fair choices a claim passes over, having met `rivals`."""
    return random.randint(0, 2 * rivals)


def _pass_over(
    waiting: list[QueuedRow],
    served: dict[int, float],
    chosen: list[str],
    choose: Chooser,
    times: int,
) -> tuple[list[QueuedRow], dict[int, float], list[str]]:
    """The claim's inputs and choice once up to `times` choices, `chosen` first, are
    set aside as if other workers took them. It stops at the last choice the rows read
    decide and that takes a job (a claim that passes over jobs still takes one), and
    before setting aside a member's last row read (_set_aside)."""
    for _ in range(times):
        if (aside := _set_aside(waiting, served, chosen)) is None or not aside[0]:
            break
        if not (following := choose(*aside)):
            break
        (waiting, served), chosen = aside, following
    return waiting, served, chosen


def _set_aside(
    waiting: Sequence[QueuedRow], served: dict[int, float], taken: Collection[str]
) -> tuple[list[QueuedRow], dict[int, float]] | None:
    """The claim's inputs once the jobs `taken` by another worker run: not waiting, and
    their estimates counted as their members' (as _served counts running jobs). None
    when one of them is the last row read of a member with more waiting: the rows left
    would show that member's queue as ended, so they no longer decide (read again)."""
    if any(row.more_behind for row in waiting if row.job_id in taken):
        return None
    served = dict(served)
    left = []
    for row in waiting:
        if row.job_id in taken:
            served[row.user_id] = served.get(row.user_id, 0.0) + (row.estimate or 1.0)
        else:
            left.append(row)
    return left, served


def _heads_of(rows: Sequence[_Row], heads: int) -> tuple[list[_Row], set[str]]:
    """Each member's first `heads` of `rows` in their own order (bot.jobs.scheduler),
    and the ids of those that are the last read of a member who has more waiting."""
    by_member: dict[int, list[_Row]] = {}
    for row in sorted(rows, key=lambda r: (LANE_RANK[r[2]], r[3], r[0])):
        by_member.setdefault(row[1], []).append(row)
    kept = [row for queue in by_member.values() for row in queue[:heads]]
    behind = {queue[heads - 1][0] for queue in by_member.values() if len(queue) > heads}
    return kept, behind


async def _fair_inputs(
    session: AsyncSession,
    fair_window: timedelta,
    models: Collection[str] | None = None,
    heads: int | None = None,
) -> tuple[list[QueuedRow], dict[int, float]]:
    """The waiting rows (of `models` only, when given; each member's first `heads`, when
    given), and the recent GPU seconds of their members. Those only order members
    against each other, so with one member waiting (a quiet server's usual queue) they
    are not read."""
    waiting = await _waiting(session, models, heads)
    if len({row.user_id for row in waiting}) < 2:
        return waiting, {}
    return waiting, await _served(session, utcnow() - fair_window)


async def _served(session: AsyncSession, since: datetime) -> dict[int, float]:
    """Each member's GPU seconds since `since` (settled), plus running jobs' estimates."""
    served: dict[int, float] = {}
    connection = await session.connection()
    for user_id, seconds in await connection.execute(_served_query(), {"since": since}):
        served[user_id] = served.get(user_id, 0.0) + float(seconds or 0.0)
    return served


@functools.cache
def _served_query() -> Any:
    """_served's statement, built once (its window's start is the parameter "since")."""
    # The window's entries first, then their sums: grouped directly, SQLite satisfies
    # the GROUP BY from the (user_id, at) index and so reads the whole ledger (months
    # of it) at every claim; the ordered subquery makes it read only the window
    # through the `at` index (measured by bench/, item store).
    window = (
        select(UsageEntry.user_id, UsageEntry.gpu_seconds)
        .where(UsageEntry.at >= bindparam("since", type_=UsageEntry.at.type))
        .order_by(UsageEntry.at)
        .subquery()
    )
    settled = select(window.c.user_id, func.sum(window.c.gpu_seconds)).group_by(window.c.user_id)
    running = (
        select(Job.user_id, func.sum(func.coalesce(Reservation.gpu_seconds, 1.0)))
        .outerjoin(Reservation, Reservation.job_id == Job.id)
        .where(Job.state == JobState.RUNNING)
        .group_by(Job.user_id)
    )
    return union_all(settled, running)


async def _transition(
    session: AsyncSession,
    job_id: str,
    expected: JobState | frozenset[JobState],
    state: JobState,
    outcome: str = "ok",
    actor_id: int | None = None,
    holder: str | None = None,
    lease_expired: bool = False,
    **fields: Any,
) -> Job:
    """Compare-and-set: write only if the job is still in a state that is expected and
    allowed to reach `state` (UPDATE ... WHERE state = ... RETURNING the row); the audit
    entry joins the same transaction.

    When only one expected state may reach `state` (as for every move the bot makes),
    that one statement is all; a job in any other state is then read once to say why.

    A running job's claim is compared too: with `holder`, only a job that worker holds
    (or that no worker claimed: moved by hand, or before leases) moves, else LeaseLost;
    with `lease_expired` (the reaper), only one whose lease has run out. A job that
    leaves its claim behind (back to the queue, or ended by the reaper) is nobody's.
    """
    allowed = {expected} if isinstance(expected, JobState) else set(expected)
    sources = [source for source in allowed if state in TRANSITIONS[source]]
    found = sources[0] if len(sources) == 1 else await _state_of(session, job_id)
    if found not in sources:
        _refused(job_id, found, state, allowed)
    now = utcnow()
    times: dict[str, Any] = {}
    claim: list[ColumnElement[bool]] = []
    if found is JobState.RUNNING:
        times["lease_until"] = None
        if holder is not None:
            claim.append(or_(Job.claimed_by.is_(None), Job.claimed_by == holder))
        if lease_expired:
            claim.append(Job.lease_until < now)
    if state is JobState.QUEUED or lease_expired:
        times["claimed_by"] = None
    if state is JobState.RUNNING:
        times["started_at"] = now
    elif state.finished:
        times["finished_at"] = now
        # An HTTP job's answer is read by its client from the stored job: there is
        # nothing to push, so Discord delivery never picks it up.
        # Bound as the column's type, so PostgreSQL stores it as UTC like `finished_at`.
        finished = literal(now, Job.delivered_at.type)
        times["delivered_at"] = case((Job.client != "discord", finished), else_=Job.delivered_at)
    moved = await _move(
        session,
        update(Job)
        .where(Job.id == job_id, Job.state == found, *claim)
        .values(state=state, **times, **fields),
    )
    if not moved:  # in another state than the one expected (or changed since read)
        now_found, now_holder = await _claim_of(session, job_id)
        if holder is not None and now_holder != holder and found is JobState.RUNNING:
            log.warning(
                "job %s: %s no longer holds it (%s, held by %s); %s not recorded",
                job_id,
                holder,
                now_found,
                now_holder or "nobody",
                state,
            )
            raise LeaseLost(job_id, now_found, state, now_holder)
        _refused(job_id, now_found, state, allowed)
    (job,) = moved
    _audit_change(session, job, found, outcome, actor_id)
    return job


async def _move(session: AsyncSession, statement: Update) -> list[Job]:
    """The jobs a compare-and-set UPDATE moved, read back by its RETURNING.

    Images are written only as a job ends (a finished state, terminal in TRANSITIONS),
    so a job that could still move has none: its outputs are set empty rather than
    loaded (succeed and block add theirs).
    """
    moved = await session.scalars(
        statement.returning(Job)
        .options(lazyload(Job.outputs))
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    jobs = list(moved)
    for job in jobs:
        set_committed_value(job, "outputs", [])
    return jobs


async def _claim_of(session: AsyncSession, job_id: str) -> tuple[JobState, str | None]:
    """A job's state and the worker holding it."""
    found = (
        await session.execute(select(Job.state, Job.claimed_by).where(Job.id == job_id))
    ).one_or_none()
    if found is None:
        raise JobNotFound(job_id)
    state, holder = found
    return state, holder


async def _state_of(session: AsyncSession, job_id: str) -> JobState:
    found = await session.scalar(select(Job.state).where(Job.id == job_id))
    if found is None:
        raise JobNotFound(job_id)
    return found


def _refused(job_id: str, found: JobState, state: JobState, allowed: set[JobState]) -> NoReturn:
    log.warning(
        "job %s: refused %s -> %s (expected %s)", job_id, found, state, "/".join(sorted(allowed))
    )
    raise IllegalTransition(job_id, found, state)


def _audit_change(
    session: AsyncSession, job: Job, previous: JobState, outcome: str, actor_id: int | None
) -> None:
    audit.record(
        session,
        f"job.{job.state}",
        outcome,
        actor_id=actor_id or job.user_id,
        guild_id=job.guild_id,
        channel_id=job.channel_id,
        target=job.id,
        params={
            "from": previous,
            "attempt": job.attempts,
            **({"error": job.error} if job.error else {}),
            **({"batch": job.batch_id} if job.batch_id else {}),
            **({"client": job.client, "key_id": job.api_key_id} if job.client != "discord" else {}),
        },
    )
