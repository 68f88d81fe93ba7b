"""Members: bans, timed pauses, personal defaults, and forgetting a member on request."""

from __future__ import annotations

import contextlib
import secrets
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from . import audit
from .audit import Actor, user_target
from .jobs import upsert_user
from .models import (
    ApiKey,
    AuditEntry,
    CommandState,
    Job,
    JobState,
    Output,
    ReceivedCommand,
    UsageEntry,
    User,
    utcnow,
)

# What a forgotten member's prompts read as afterwards.
REDACTED = "[forgotten]"
# Job spec keys that hold what a member wrote.
PROMPT_KEYS = ("prompt", "negative_prompt")
# Job spec keys that hold a member's uploads (paths relative to the data directory).
INPUT_KEYS = ("init_image", "mask_image", "control_image")
# Uploads live under data_dir/inputs/; any other input path (a V/U source) is an output.
INPUTS_FOLDER = "inputs"


class UnfinishedJobs(Exception):
    """Forget-me waits until the member has no queued or running job."""

    def __init__(self, count: int) -> None:
        super().__init__(
            f"You have {count} job(s) queued or running: cancel them or let them finish first."
        )
        self.count = count


@dataclass(frozen=True)
class Forgotten:
    jobs: int  # jobs whose prompts were redacted
    images: int  # image files and rows deleted
    inputs: int = 0  # uploaded images (init images, masks, sketches) deleted
    # The bot's messages for the member's jobs, as (channel id, message id), to delete;
    # the channel is None for a private reply (its result may have gone by DM).
    messages: list[tuple[int | None, int]] = field(default_factory=list)
    # The id the member's usage and audit trail now stand under (for later entries).
    pseudonym: int | None = None


def upload_paths(spec: dict[str, Any]) -> list[str]:
    """The member's uploads a job spec points at (never another job's outputs)."""
    return [
        path
        for key in INPUT_KEYS
        if isinstance(path := spec.get(key), str) and Path(path).parts[:1] == (INPUTS_FOLDER,)
    ]


def delete_uploads(data_dir: Path, paths: list[str]) -> int:
    """Delete uploaded files and the folders they leave empty; how many files were there."""
    deleted = 0
    for relative in dict.fromkeys(paths):
        path = data_dir / relative
        if path.is_file():
            path.unlink(missing_ok=True)
            deleted += 1
        with contextlib.suppress(OSError):  # not empty, or already gone
            path.parent.rmdir()
    return deleted


def _pause_ends(cooldown_until: datetime | None) -> datetime | None:
    """When a stored pause ends, if it has not ended yet."""
    return cooldown_until if cooldown_until is not None and cooldown_until > utcnow() else None


def new_pseudonym() -> int:
    """A stable stand-in id for a forgotten member: negative, so never a Discord id."""
    return -(secrets.randbits(62) + 1)


@dataclass(frozen=True)
class Standing:
    """What the door needs to know of a member, read in one lookup."""

    ban_reason: str | None  # None: not banned
    paused_until: datetime | None  # None: not paused now
    defaults: dict[str, Any]  # their personal /imagine defaults


class UserStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], data_dir: Path) -> None:
        self._sessions = sessions
        self._data_dir = data_dir

    async def standing(self, user_id: int) -> Standing:
        """Ban, pause and personal defaults of a member (one who never came: none)."""
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(User.banned, User.ban_reason, User.cooldown_until, User.defaults).where(
                        User.id == user_id
                    )
                )
            ).one_or_none()
        if row is None:
            return Standing(None, None, {})
        return Standing(
            ban_reason=(row.ban_reason or "banned") if row.banned else None,
            paused_until=_pause_ends(row.cooldown_until),
            defaults=dict(row.defaults or {}),
        )

    async def ban_reason(self, user_id: int) -> str | None:
        """Why the member is banned; None when they are not."""
        return (await self.standing(user_id)).ban_reason

    async def cooldown_until(self, user_id: int) -> datetime | None:
        """When the member's timed pause ends; None when they are not paused."""
        return (await self.standing(user_id)).paused_until

    async def pause(self, user_id: int, until: datetime, reason: str, actor: Actor) -> None:
        """Put the member on a timed cooldown (audited as `user.cooldown`)."""
        async with self._sessions.begin() as session:
            await upsert_user(session, user_id)
            await session.execute(
                update(User)
                .where(User.id == user_id)
                .values(cooldown_until=until, cooldown_reason=reason)
            )
            audit.record_by(
                session, actor, "user.cooldown", target=user_target(user_id),
                params={"until": until.isoformat(), "reason": reason},
            )  # fmt: skip

    async def ban(self, user_id: int, reason: str, actor: Actor) -> None:
        async with self._sessions.begin() as session:
            await upsert_user(session, user_id)
            await session.execute(
                update(User).where(User.id == user_id).values(banned=True, ban_reason=reason)
            )
            audit.record_by(
                session, actor, "user.ban", target=user_target(user_id), params={"reason": reason}
            )

    async def unban(self, user_id: int, actor: Actor, reason: str = "") -> bool:
        """Lift a ban; False (still audited) when the member was not banned."""
        async with self._sessions.begin() as session:
            lifted = await session.execute(
                update(User)
                .where(User.id == user_id, User.banned.is_(True))
                .values(banned=False, ban_reason=None)
            )
            was_banned = bool(lifted.rowcount)  # type: ignore[attr-defined]
            audit.record_by(
                session, actor, "user.unban", "ok" if was_banned else "no-op",
                target=user_target(user_id), params={"reason": reason} if reason else None,
            )  # fmt: skip
        return was_banned

    async def defaults(self, user_id: int) -> dict[str, Any]:
        """The member's personal /imagine defaults (model, sampler, aspect, steps, cfg, ...)."""
        async with self._sessions() as session:
            stored = await session.scalar(select(User.defaults).where(User.id == user_id))
        return dict(stored or {})

    async def prefers_dm(self, user_id: int) -> bool:
        """Whether the member wants finished images by DM (/settings delivery)."""
        return (await self.defaults(user_id)).get("delivery") == "dm"

    async def set_defaults(
        self, user_id: int, name: str, defaults: dict[str, Any], actor: Actor
    ) -> None:
        """Replace the member's personal defaults; an empty dict clears them."""
        async with self._sessions.begin() as session:
            await upsert_user(session, user_id, name)
            await session.execute(update(User).where(User.id == user_id).values(defaults=defaults))
            audit.record_by(
                session, actor, "user.defaults", target=user_target(user_id),
                params={"keys": sorted(defaults)},
            )  # fmt: skip

    async def forget(self, user_id: int, actor: Actor) -> Forgotten:
        """Delete a member's images, uploads, prompts and defaults; keep their usage under
        a pseudonym.

        Jobs, ledger entries and audit entries move to a new random id, so totals
        stay right while nothing points back to the Discord account. A banned (or
        paused) member stays so. Files are removed after the commit: a crash in
        between leaves stray files, never rows pointing at missing ones (the
        retention sweep removes uploads no job points at). The bot's Discord
        messages for the jobs come back in `messages` for the caller to delete.
        Raises UnfinishedJobs (audited) while the member has jobs in flight.
        """
        async with self._sessions.begin() as session:
            await upsert_user(session, user_id)  # the write lock first: no job slips in
            unfinished = await session.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.user_id == user_id, Job.state.in_([JobState.QUEUED, JobState.RUNNING]))
            )
            if unfinished:
                audit.record_by(
                    session, actor, "user.forget", "refused", target=user_target(user_id),
                    params={"unfinished_jobs": unfinished},
                )  # fmt: skip
            else:
                moved = await _move_to_pseudonym(session, user_id)
                audit.record_by(
                    session, actor, "user.forget", target=user_target(user_id),
                    params={"jobs": len(moved.jobs), "images": len(moved.images),
                            "inputs": len(moved.uploads), "messages": len(moved.messages)},
                )  # fmt: skip
        if unfinished:
            raise UnfinishedJobs(unfinished)
        self._delete_files(moved.images, moved.jobs)
        inputs = delete_uploads(self._data_dir, moved.uploads)
        return Forgotten(
            len(moved.jobs), len(moved.images), inputs, moved.messages, moved.pseudonym
        )

    def _delete_files(self, paths: list[str], job_ids: list[str]) -> None:
        for relative in paths:
            (self._data_dir / relative).unlink(missing_ok=True)
        for job_id in job_ids:
            # Uploaded inputs (init image, mask, sketch) live next to the outputs.
            shutil.rmtree(self._data_dir / "images" / job_id, ignore_errors=True)


@dataclass(frozen=True)
class _Moved:
    jobs: list[str]
    images: list[str]  # output paths
    uploads: list[str]  # input paths under inputs/
    messages: list[tuple[int | None, int]]
    pseudonym: int


async def _move_to_pseudonym(session: AsyncSession, user_id: int) -> _Moved:
    """Redact the member's jobs and hand them, their usage and audit trail to a pseudonym.

    Returns what is to be deleted outside the transaction: files and messages.
    """
    jobs = (await session.scalars(select(Job).where(Job.user_id == user_id))).all()
    paths = [output.path for job in jobs for output in job.outputs]
    uploads = [path for job in jobs for path in upload_paths(job.spec)]
    messages = [(job.channel_id, job.message_id) for job in jobs if job.message_id is not None]
    pseudonym = new_pseudonym()
    session.add(User(id=pseudonym, name="forgotten"))
    await session.flush()  # the pseudonym's row first, for the foreign keys
    await session.execute(delete(Output).where(Output.job_id.in_([job.id for job in jobs])))
    for job in jobs:
        job.spec = {**job.spec, **dict.fromkeys(PROMPT_KEYS, REDACTED)}
        job.user_id = pseudonym
        job.interaction_token = None
        job.message_id = None
        job.api_key_id = None
    # The member's HTTP API keys identify them: they go (and stop working) too.
    await session.execute(delete(ApiKey).where(ApiKey.user_id == user_id))
    await session.execute(
        update(UsageEntry).where(UsageEntry.user_id == user_id).values(user_id=pseudonym)
    )
    # The command journal keeps what was typed (prompts, attachment links) once handled.
    await session.execute(
        delete(ReceivedCommand).where(
            ReceivedCommand.user_id == user_id, ReceivedCommand.state == CommandState.HANDLED
        )
    )
    await _pseudonymise_audit(session, user_id, pseudonym)
    user = await session.get(User, user_id)
    paused = user is not None and _pause_ends(user.cooldown_until) is not None
    if user is not None and (user.banned or paused):
        user.name, user.defaults = "forgotten", {}
    elif user is not None:
        await session.delete(user)
    return _Moved([job.id for job in jobs], paths, uploads, messages, pseudonym)


async def _pseudonymise_audit(session: AsyncSession, user_id: int, pseudonym: int) -> None:
    """Rewrite the member's id in the audit log and drop any prompt text it recorded."""
    entries = await session.scalars(
        select(AuditEntry).where(
            (AuditEntry.actor_id == user_id) | (AuditEntry.target == user_target(user_id))
        )
    )
    for entry in entries:
        if entry.actor_id == user_id:
            entry.actor_id = pseudonym
        if entry.target == user_target(user_id):
            entry.target = user_target(pseudonym)
        if any(key in entry.params for key in PROMPT_KEYS):
            entry.params = {k: v for k, v in entry.params.items() if k not in PROMPT_KEYS}
