"""Members: bans, personal defaults, and forgetting a member on request."""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from . import audit
from .audit import Actor, user_target
from .jobs import upsert_user
from .models import ApiKey, AuditEntry, Job, JobState, Output, UsageEntry, User

# What a forgotten member's prompts read as afterwards.
REDACTED = "[forgotten]"
# Job spec keys that hold what a member wrote.
PROMPT_KEYS = ("prompt", "negative_prompt")


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


def new_pseudonym() -> int:
    """A stable stand-in id for a forgotten member: negative, so never a Discord id."""
    return -(secrets.randbits(62) + 1)


class UserStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], data_dir: Path) -> None:
        self._sessions = sessions
        self._data_dir = data_dir

    async def ban_reason(self, user_id: int) -> str | None:
        """Why the member is banned; None when they are not. One primary-key lookup."""
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(User.banned, User.ban_reason).where(User.id == user_id)
                )
            ).one_or_none()
        if row is None or not row.banned:
            return None
        return row.ban_reason or "banned"

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
        """Delete a member's images, prompts and defaults; keep their usage under a pseudonym.

        Jobs, ledger entries and audit entries move to a new random id, so totals
        stay right while nothing points back to the Discord account. A banned
        member stays banned. Files are removed after the commit: a crash in
        between leaves stray files, never rows pointing at missing ones.
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
                jobs, paths = await _move_to_pseudonym(session, user_id)
                audit.record_by(
                    session, actor, "user.forget", target=user_target(user_id),
                    params={"jobs": len(jobs), "images": len(paths)},
                )  # fmt: skip
        if unfinished:
            raise UnfinishedJobs(unfinished)
        self._delete_files(paths, jobs)
        return Forgotten(jobs=len(jobs), images=len(paths))

    def _delete_files(self, paths: list[str], job_ids: list[str]) -> None:
        for relative in paths:
            (self._data_dir / relative).unlink(missing_ok=True)
        for job_id in job_ids:
            # Uploaded inputs (init image, mask, sketch) live next to the outputs.
            shutil.rmtree(self._data_dir / "images" / job_id, ignore_errors=True)


async def _move_to_pseudonym(session: AsyncSession, user_id: int) -> tuple[list[str], list[str]]:
    """Redact the member's jobs and hand them, their usage and audit trail to a pseudonym.

    Returns the job ids and the image paths whose files are to be deleted.
    """
    jobs = (await session.scalars(select(Job).where(Job.user_id == user_id))).all()
    paths = [output.path for job in jobs for output in job.outputs]
    pseudonym = new_pseudonym()
    session.add(User(id=pseudonym, name="forgotten"))
    await session.flush()  # the pseudonym's row first, for the foreign keys
    await session.execute(delete(Output).where(Output.job_id.in_([job.id for job in jobs])))
    for job in jobs:
        job.spec = {**job.spec, **dict.fromkeys(PROMPT_KEYS, REDACTED)}
        job.user_id = pseudonym
        job.interaction_token = None
        job.api_key_id = None
    # The member's HTTP API keys identify them: they go (and stop working) too.
    await session.execute(delete(ApiKey).where(ApiKey.user_id == user_id))
    await session.execute(
        update(UsageEntry).where(UsageEntry.user_id == user_id).values(user_id=pseudonym)
    )
    await _pseudonymise_audit(session, user_id, pseudonym)
    user = await session.get(User, user_id)
    if user is not None and user.banned:
        user.name, user.defaults = "forgotten", {}
    elif user is not None:
        await session.delete(user)
    return [job.id for job in jobs], paths


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
