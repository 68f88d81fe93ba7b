"""Members: bans, timed pauses, personal defaults, and forgetting a member on request."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..blobs import Blobs, job_folder
from ..jobs.spec import JobSpec
from . import audit
from .audit import Actor, user_target
from .jobs import upsert_user
from .models import (
    ApiKey,
    AuditEntry,
    CommandState,
    EditorLink,
    Job,
    JobState,
    Output,
    ReceivedCommand,
    UsageEntry,
    User,
    utcnow,
)
from .uploads import upload_paths, uploads_in_use

# What a forgotten member's words read as afterwards.
REDACTED = "[forgotten]"
# Job spec fields that hold what a member wrote (the blend's texts too, see redacted_spec).
PROMPT_KEYS = ("prompt", "negative_prompt")
# Audit params that can hold a member's words, in the entries they made: their prompts,
# an API key's name (apikey.create), a refusal's reason (it may quote what they typed),
# the HTTP path they asked for (it names the engine they typed).
MEMBER_TEXT_PARAMS = (*PROMPT_KEYS, "name", "reason", "path")


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
    # Uploads kept because another member's job uses them (they re-rolled or remixed it).
    shared_inputs: int = 0
    # The bot's messages for the member's jobs, as (channel id, message id), to delete;
    # the channel is None for a private reply (its result may have gone by DM).
    messages: list[tuple[int | None, int]] = field(default_factory=list)
    # The id the member's usage and audit trail now stand under (for later entries).
    pseudonym: int | None = None


def redacted_spec(spec: JobSpec) -> JobSpec:
    """A job spec with the member's words replaced (a blend keeps its weights)."""
    blend = tuple((REDACTED, weight) for _, weight in spec.blend)
    return spec.model_copy(update={**dict.fromkeys(PROMPT_KEYS, REDACTED), "blend": blend})


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
    def __init__(self, sessions: async_sessionmaker[AsyncSession], blobs: Blobs) -> None:
        self._sessions = sessions
        self._blobs = blobs

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
                session,
                actor,
                "user.cooldown",
                target=user_target(user_id),
                params={"until": until.isoformat(), "reason": reason},
            )

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
                session,
                actor,
                "user.unban",
                "ok" if was_banned else "no-op",
                target=user_target(user_id),
                params={"reason": reason} if reason else None,
            )
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
                session,
                actor,
                "user.defaults",
                target=user_target(user_id),
                params={"keys": sorted(defaults)},
            )

    async def forget(self, user_id: int, actor: Actor) -> Forgotten:
        """Delete a member's images, uploads, words and defaults; keep their usage under
        a pseudonym.

        Jobs, ledger entries and audit entries move to a new random id, so totals
        stay right while nothing points back to the Discord account; every text
        they wrote (prompts, weighted prompts, key names, what refusals quoted) is
        redacted. An upload another member's job also uses (a re-roll or remix of
        theirs) is kept for that job. A banned (or paused) member stays so. Files
        are removed after the commit: a crash in between leaves stray files, never
        rows pointing at missing ones (the retention sweep removes uploads no job
        points at). The bot's Discord messages for the jobs come back in `messages`
        for the caller to delete. Raises UnfinishedJobs (audited) while the member
        has jobs in flight.
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
                    session,
                    actor,
                    "user.forget",
                    "refused",
                    target=user_target(user_id),
                    params={"unfinished_jobs": unfinished},
                )
            else:
                moved = await _move_to_pseudonym(session, user_id)
                audit.record_by(
                    session,
                    actor,
                    "user.forget",
                    target=user_target(user_id),
                    params={
                        "jobs": len(moved.jobs),
                        "images": len(moved.images),
                        "inputs": len(moved.uploads),
                        "shared_inputs": moved.shared_uploads,
                        "messages": len(moved.messages),
                    },
                )
        if unfinished:
            raise UnfinishedJobs(unfinished)
        await self._blobs.delete([*moved.images, *moved.uploads])
        for job_id in moved.jobs:  # anything else the job left in its folder
            await self._blobs.delete_under(job_folder(job_id))
        return Forgotten(
            len(moved.jobs),
            len(moved.images),
            len(moved.uploads),
            moved.shared_uploads,
            moved.messages,
            moved.pseudonym,
        )


@dataclass(frozen=True)
class _Moved:
    jobs: list[str]
    images: list[str]  # output paths
    uploads: list[str]  # input paths under inputs/ that no other member's job uses
    shared_uploads: int  # input paths kept for another member's job
    messages: list[tuple[int | None, int]]
    pseudonym: int


async def _move_to_pseudonym(session: AsyncSession, user_id: int) -> _Moved:
    """Redact the member's jobs and hand them, their usage and audit trail to a pseudonym.

    Returns what is to be deleted outside the transaction: files and messages.
    """
    jobs = (await session.scalars(select(Job).where(Job.user_id == user_id))).all()
    job_ids = [job.id for job in jobs]
    paths = [output.path for job in jobs for output in job.outputs]
    uploads = {path for job in jobs for path in upload_paths(job.spec)}
    shared = await uploads_in_use(session, uploads, job_ids)
    messages = [(job.channel_id, job.message_id) for job in jobs if job.message_id is not None]
    pseudonym = new_pseudonym()
    session.add(User(id=pseudonym, name="forgotten"))
    await session.flush()  # the pseudonym's row first, for the foreign keys
    await session.execute(delete(Output).where(Output.job_id.in_(job_ids)))
    for job in jobs:
        job.spec = redacted_spec(job.spec)
        job.user_id = pseudonym
        job.interaction_token = None
        job.message_id = None
        job.api_key_id = None
        job.result_key = None  # a hash of their words: it could confirm a guess of them
    # The member's HTTP API keys identify them: they go (and stop working) too, and so do
    # the Vary (Region) editor links given to them (their name and where they were).
    await session.execute(delete(ApiKey).where(ApiKey.user_id == user_id))
    await session.execute(delete(EditorLink).where(EditorLink.user_id == user_id))
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
    return _Moved(job_ids, paths, sorted(uploads - shared), len(shared), messages, pseudonym)


async def _pseudonymise_audit(session: AsyncSession, user_id: int, pseudonym: int) -> None:
    """Rewrite the member's id in the audit log and redact the words of theirs it recorded
    (in entries about them by others, an admin's words, e.g. a ban's reason, stay)."""
    entries = await session.scalars(
        select(AuditEntry).where(
            (AuditEntry.actor_id == user_id) | (AuditEntry.target == user_target(user_id))
        )
    )
    for entry in entries:
        words = MEMBER_TEXT_PARAMS if entry.actor_id == user_id else PROMPT_KEYS
        if entry.actor_id == user_id:
            entry.actor_id = pseudonym
        if entry.target == user_target(user_id):
            entry.target = user_target(pseudonym)
        if any(key in entry.params for key in words):
            entry.params = entry.params | {k: REDACTED for k in words if k in entry.params}
