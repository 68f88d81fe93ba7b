"""SQLAlchemy models: the database is the truth about users, jobs, outputs and usage.

Alembic migrations in migrations/ create this schema; a test checks the two
never drift apart.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates
from sqlalchemy.types import TypeDecorator

from ..jobs.spec import JobSpec, stored_batch_key


def new_id() -> str:
    """A job's or a batch's id: 10 hex digits, short enough to type in a command."""
    return secrets.token_hex(5)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes, also on SQLite (which stores naive text)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime; use bot.store.models.utcnow()")
        return value.astimezone(UTC).replace(tzinfo=None) if value else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.replace(tzinfo=UTC) if value else None


class SpecJSON(TypeDecorator[JobSpec]):
    """A JobSpec stored as its JSON, validated again when read.

    JobSpec has only gained fields, each with a default, and its limits never
    tightened, so the JSON of every row ever written still validates.
    """

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: JobSpec | None, dialect: Any) -> dict[str, Any] | None:
        return value.model_dump(mode="json") if value is not None else None

    def process_result_value(self, value: dict[str, Any] | None, dialect: Any) -> JobSpec | None:
        return JobSpec.model_validate(value) if value is not None else None


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BLOCKED = "blocked"  # withheld by moderation

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.BLOCKED})

# Every state change a job may make; anything else is refused, never applied.
# running -> queued: the run was cut off (bot stopped or crashed, engine died) and is retried.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    # queued -> succeeded: a job waiting for an identical one is answered from its result.
    JobState.QUEUED: frozenset(
        {JobState.RUNNING, JobState.SUCCEEDED, JobState.CANCELLED, JobState.FAILED}
    ),
    JobState.RUNNING: frozenset({JobState.QUEUED, *FINISHED}),
    **{state: frozenset() for state in FINISHED},
}


class Lane(StrEnum):
    """Priority (members with a priority role) first, then normal; relax jobs (over
    quota) only when no other job waits."""

    PRIORITY = "priority"
    NORMAL = "normal"
    RELAX = "relax"


class QuotaScope(StrEnum):
    ROLE = "role"
    USER = "user"


def _enum(cls: type[StrEnum]) -> Enum:
    """Stored as its value in a plain string column (no native enum: portable, easy to extend)."""
    return Enum(cls, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    banned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    ban_reason: Mapped[str | None] = mapped_column(Text)
    # A timed pause (moderation), e.g. after repeated blocked prompts; past: none.
    cooldown_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cooldown_reason: Mapped[str | None] = mapped_column(Text)
    # Personal defaults for /imagine: model, sampler, aspect, steps, cfg, negative.
    defaults: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        # The GPU-time estimate at admission reads a model's latest successes.
        Index("ix_jobs_model_state_finished", "model", "state", "finished_at"),
        # The scheduler reads the waiting jobs; the quota check counts a member's.
        Index("ix_jobs_state_lane_created", "state", "lane", "created_at"),
        Index("ix_jobs_user_state", "user_id", "state"),
        # A claim reads each member's first waiting jobs per lane (bot.store.jobs).
        Index("ix_jobs_state_user_lane_created", "state", "user_id", "lane", "created_at", "id"),
        # The result cache looks up a member's earlier job with the same result key.
        Index("ix_jobs_user_result_key", "user_id", "result_key"),
    )

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    state: Mapped[JobState] = mapped_column(_enum(JobState), index=True)
    # What to make, exactly as the user asked (stored as JSON).
    spec: Mapped[JobSpec] = mapped_column(SpecJSON)
    model: Mapped[str] = mapped_column(String(100))
    seeds: Mapped[list[int]] = mapped_column(JSON)
    # What a claim's scheduler reads of the spec, kept beside it whenever it is set
    # (_keep_spec_columns), so a claim builds its entries without parsing specs:
    # bot.jobs.spec.stored_batch_key and the image count. None only on rows that had
    # finished before migration 0014, which never wait again.
    batch_key: Mapped[str | None] = mapped_column(String(64))
    image_count: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    gpu_seconds: Mapped[float | None] = mapped_column(Float)
    device: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Where the reply lives in Discord, so a result can be delivered even after
    # the interaction token expired or the bot restarted.
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    channel_id: Mapped[int | None] = mapped_column(BigInteger)
    interaction_id: Mapped[int | None] = mapped_column(BigInteger)
    interaction_token: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lane: Mapped[Lane] = mapped_column(_enum(Lane), default=Lane.NORMAL, server_default="normal")
    # How often a worker claimed the job; a run cut off twice (a job that crashes the
    # bot or the engine) is failed rather than retried for ever.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The engine request the job last ran in, shared by the jobs batched with it.
    batch_id: Mapped[str | None] = mapped_column(String(32))
    # Discord's upload limit for the reply, as the interaction stated it.
    upload_limit: Mapped[int | None] = mapped_column(BigInteger)
    # Who asked: "discord" (a command or button) or "http" (the HTTP API, with its key).
    client: Mapped[str] = mapped_column(String(16), default="discord", server_default="discord")
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    # An HTTP request waits for this job on an open connection; if the connection is
    # gone (the bot stopped under it), nobody will read the answer: it is cancelled.
    synchronous: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Asked for in a channel Discord marks age-restricted: `[moderation] nsfw_channels`
    # then says what its flagged images meet (bot.moderation.images); elsewhere they are
    # withheld.
    nsfw_channel: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The image classifier's verdicts on the job's images (scores included) and the
    # policy they met; None before the engine answered, or with the classifier off.
    moderation: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # A running job asked to stop: the request is a row's data, not a message to one
    # process, so the worker holding the job sees it wherever it runs (bot.jobs.pool
    # polls it). Who asked (None: the bot) and whether the job is refunded in full
    # (the bot stopped it) rather than charged the GPU time it used.
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_requested_by: Mapped[int | None] = mapped_column(BigInteger)
    cancel_refund: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The worker (bot.store.jobs.new_worker_id: host, process, random) that claimed the
    # job, kept after it ends; and while it runs, until when that claim holds unless the
    # worker's heartbeat renews it. A claim past its lease is returned to the queue by
    # the reaper (bot.jobs.reaper), and the worker that lost it can record no result.
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A running job's latest step, written by whichever process runs it at a bounded
    # rate, and its latest preview (relative to the data folder): front doors in other
    # processes follow these rows (bot.jobs.relay), not the engine.
    progress_step: Mapped[int | None] = mapped_column(Integer)
    progress_total: Mapped[int | None] = mapped_column(Integer)
    preview: Mapped[str | None] = mapped_column(Text)
    # The result cache (bot.jobs.cache): what the job makes, as a hash of everything that
    # decides its pixels; set only for a job whose seed its member named (None: never
    # answered from, nor answering, another job).
    result_key: Mapped[str | None] = mapped_column(String(64))
    # The identical job whose result answers this one: while this one is queued, the job
    # in flight it waits for (not claimed meanwhile); once it succeeded, the job its
    # images come from (no GPU time, nothing charged).
    cached_from: Mapped[str | None] = mapped_column(String(16), index=True)
    # The front door (bot.jobs.relay.front_door_id) delivering the finished job's answer,
    # and until when its claim holds: with several front doors, exactly one delivers; a
    # claim whose holder died lapses and another takes it.
    delivery_claimed_by: Mapped[str | None] = mapped_column(String(128))
    delivery_claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)

    outputs: Mapped[list[Output]] = relationship(
        back_populates="job", order_by="Output.index", lazy="selectin"
    )

    @validates("spec")
    def _keep_spec_columns(self, _key: str, spec: JobSpec) -> JobSpec:
        # Every spec set through the ORM (a new row, forget-me's redaction) keeps the
        # scheduler's columns equal to what it would compute from the spec.
        self.batch_key = stored_batch_key(spec)
        self.image_count = spec.count
        return spec


class Output(Base):
    __tablename__ = "outputs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text, doc="relative to the storage data_dir")
    sha256: Mapped[str] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    # Everything needed to make this image again: mode, model and its file hash,
    # scheduler and options, every parameter, seed, library versions.
    recipe: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    # Moderation flags set by admins or filters, e.g. {"nsfw": true}.
    flags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")

    job: Mapped[Job] = relationship(back_populates="outputs")


class AuditEntry(Base):
    """Append-only: every job state change and decision the bot takes."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    channel_id: Mapped[int | None] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str | None] = mapped_column(String(100))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    outcome: Mapped[str] = mapped_column(String(32))


class QuotaPolicy(Base):
    """An admin's override of the config's default limits for one role or one user.

    A None limit inherits (user from roles, roles from the default).
    """

    __tablename__ = "quota_policies"
    __table_args__ = (UniqueConstraint("scope", "subject_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[QuotaScope] = mapped_column(_enum(QuotaScope))
    subject_id: Mapped[int] = mapped_column(BigInteger)  # a Discord role or user id
    images_per_day: Mapped[int | None] = mapped_column(Integer)
    gpu_seconds_per_day: Mapped[float | None] = mapped_column(Float)
    cost_per_day: Mapped[float | None] = mapped_column(Float)
    jobs_queued: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[int | None] = mapped_column(BigInteger)


class Reservation(Base):
    """A queued or running job's estimated usage, held against its owner's quota.

    Settling turns it into a ledger entry and refunding deletes it, each in the
    transaction that finishes the job, so a job is charged exactly once.
    """

    __tablename__ = "quota_reservations"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    images: Mapped[int] = mapped_column(Integer)
    gpu_seconds: Mapped[float] = mapped_column(Float)
    cost: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class UsageEntry(Base):
    """The usage ledger: one entry per settled job, with what it measurably used."""

    __tablename__ = "usage_ledger"
    # A member's usage today and their recent GPU time (fair share) read this range.
    __table_args__ = (Index("ix_usage_ledger_user_at", "user_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    images: Mapped[int] = mapped_column(Integer)
    gpu_seconds: Mapped[float] = mapped_column(Float)
    cost: Mapped[float] = mapped_column(Float)
    currency: Mapped[str] = mapped_column(String(8))
    lane: Mapped[Lane] = mapped_column(_enum(Lane))


class ApiKey(Base):
    """An HTTP API key: it acts as the member who made it in Discord (/apikey create).

    Only a hash of the secret is stored; `lookup` (the key's public part) finds the
    row without hashing every key. The member's roles and server are kept from the
    moment of creation, for role quotas and the server's blocklist.
    """

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    lookup: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(Text)
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    role_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Heartbeat(Base):
    """The latest tiny write of a health check, per service: proof the database takes writes."""

    __tablename__ = "heartbeats"

    service: Mapped[str] = mapped_column(String(32), primary_key=True)
    beat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BlockedTerm(Base):
    """A prompt blocklist entry; guild_id None applies everywhere."""

    __tablename__ = "blocklist"
    __table_args__ = (UniqueConstraint("guild_id", "term"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    term: Mapped[str] = mapped_column(String(200))
    added_by: Mapped[int | None] = mapped_column(BigInteger)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class GuildSettings(Base):
    """Per-guild settings an admin changes from Discord (e.g. allowed channels)."""

    __tablename__ = "guild_settings"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[int | None] = mapped_column(BigInteger)


class CommandState(StrEnum):
    RECEIVED = "received"  # acknowledged to Discord, not yet handled
    HANDLED = "handled"  # queued as job(s), or refused with a message


class ReceivedCommand(Base):
    """A slash command or button click, written before Discord is told it was received.

    A bot killed after the deferral finds the row at start and completes it, so
    nothing a member saw acknowledged is lost.
    """

    __tablename__ = "received_commands"

    interaction_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    command: Mapped[str] = mapped_column(String(64))
    state: Mapped[CommandState] = mapped_column(_enum(CommandState), index=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    user_name: Mapped[str] = mapped_column(String(100))
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    channel_id: Mapped[int | None] = mapped_column(BigInteger)
    role_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    # A credential for the reply; dropped once the command is handled and answered.
    token: Mapped[str | None] = mapped_column(Text)
    # The raw options as Discord sent them (attachments as id, url, name, size, type).
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    upload_limit: Mapped[int | None] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    handled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(Text)


class EditorLink(Base):
    """A Vary (Region) editor link given to a member: the signed link names its row by
    `nonce`; the row holds who and where it was given (for the job it queues) and, once
    the link was used, when (set by one compare-and-set, so a link works once)."""

    __tablename__ = "editor_links"

    nonce: Mapped[str] = mapped_column(String(32), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(16))
    image: Mapped[int] = mapped_column(Integer)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    user_name: Mapped[str] = mapped_column(String(100))
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    channel_id: Mapped[int | None] = mapped_column(BigInteger)
    role_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    nsfw_channel: Mapped[bool] = mapped_column(Boolean, default=False)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
