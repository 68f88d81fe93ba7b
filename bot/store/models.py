"""SQLAlchemy models: the database is the truth about users, jobs, outputs and usage.

Alembic migrations in migrations/ create this schema; a test checks the two
never drift apart.
"""

from __future__ import annotations

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
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


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


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class Lane(StrEnum):
    """Normal jobs always run first; relax jobs (over quota) only when no normal one waits."""

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
    # Personal defaults for /imagine: model, sampler, aspect, steps, cfg, negative.
    defaults: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    state: Mapped[JobState] = mapped_column(_enum(JobState), index=True)
    # The validated JobSpec as JSON: what to make, exactly as the user asked.
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    model: Mapped[str] = mapped_column(String(100))
    seeds: Mapped[list[int]] = mapped_column(JSON)
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

    outputs: Mapped[list[Output]] = relationship(
        back_populates="job", order_by="Output.index", lazy="selectin"
    )


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

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    images: Mapped[int] = mapped_column(Integer)
    gpu_seconds: Mapped[float] = mapped_column(Float)
    cost: Mapped[float] = mapped_column(Float)
    currency: Mapped[str] = mapped_column(String(8))
    lane: Mapped[Lane] = mapped_column(_enum(Lane))


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
