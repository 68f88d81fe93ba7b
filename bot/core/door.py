"""The door: every new job, from every origin, passes the same checks in one order.

Rate, standing (ban, pause), moderation of what the member typed, the spec built
from the options (with the inputs as declared), moderation of what the build
added (defaults, a style), the inputs saved, admission (quota, queue length) and
the audit of a refusal. A door (Discord, HTTP) parses its request into a Draft
and an InputSource, calls `submit` (or `check` before a deferral and `admit`
after it) and renders what comes back: Accepted, or a typed Refusal.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..blobs import uploads_of
from ..jobs.service import JobService, QueueFull, Submitted
from ..jobs.spec import BadInput, Inputs, JobSpec
from ..moderation.service import Blocked, Moderation, ScreenedText
from ..store.audit import Actor
from ..store.commands import AlreadyHandled, CommandStore
from ..store.jobs import Requester
from ..store.quotas import OverQuotaError, Refused, UserBanned
from ..store.users import Standing, UserStore
from .references import Found, ReferenceFinder
from .refusals import Refusal, RefusalKind, paused

log = logging.getLogger(__name__)


class Origin(StrEnum):
    """Where a request came in; audited with a refusal."""

    SLASH = "slash"  # /imagine
    MENU = "menu"  # a message's context menu and its form
    SKETCH = "sketch"  # a reply to the bot with an image
    BUTTON = "button"  # a button or menu on a message (under a job, /admin queue)
    MODAL = "modal"  # a form opened by a button (✏️ Remix)
    HTTP = "http"  # the HTTP API


class Draft(Protocol):
    """What the member asked for, before it is a JobSpec."""

    # The audit name of the command ("imagine", "button.variation"): `<command>.refused`.
    @property
    def command(self) -> str: ...

    def typed(self) -> Sequence[ScreenedText]:
        """The texts the member typed, screened before anything is built from them."""
        ...

    async def build(self, personal: Mapping[str, object], inputs: Inputs) -> list[JobSpec]:
        """The jobs asked for, from the member's `personal` defaults and `inputs` (declared
        before they are saved, saved after); BadInput says what to change."""
        ...

    def added(self, personal: Mapping[str, object], specs: Sequence[JobSpec]) -> list[ScreenedText]:
        """The texts the build added (a default negative prompt, a style, the words of a
        job an action reuses), screened before the inputs are saved."""
        ...

    def repeatable(self) -> bool:
        """Whether the member named the seeds (none was drawn): then the member's identical
        earlier result answers the request (bot.jobs.cache), with `[cache] enabled`."""
        ...


@runtime_checkable
class Referring(Protocol):
    """A draft that names results as reference images (--sref): the door finds them."""

    def reference_words(self) -> tuple[str, ...]:
        """The references as written (job ids, links); BadInput when unreadable."""
        ...


class InputSource(Protocol):
    """The images a request brings: described first, saved once the request passed."""

    def declared(self) -> Inputs:
        """The images as described (sizes, no files yet); BadInput when one cannot be used."""
        ...

    async def save(self) -> Inputs:
        """Fetch, check and store the images; BadInput when one cannot be used."""
        ...

    async def discard(self) -> None:
        """Remove what `save` stored, for a request that was refused after it."""
        ...


class NoInputs:
    """A request without images."""

    def declared(self) -> Inputs:
        return Inputs()

    async def save(self) -> Inputs:
        return Inputs()

    async def discard(self) -> None:
        return None


NO_INPUTS = NoInputs()


@dataclass(frozen=True)
class SavedInputs:
    """Images already stored by the door that parsed them (the HTTP API's body)."""

    inputs: Inputs
    # The folder they were stored in, removed when the request is refused.
    folder: Path | None = None

    def declared(self) -> Inputs:
        return self.inputs

    async def save(self) -> Inputs:
        return self.inputs

    async def discard(self) -> None:
        if self.folder is not None:
            await asyncio.to_thread(shutil.rmtree, self.folder, True)


class Messages(Protocol):
    """The door's messages that show each job of a request (Discord's follow-ups)."""

    async def placeholders(self, count: int) -> list[int | None]: ...

    async def discard(self, message_ids: list[int | None]) -> None: ...


@dataclass(frozen=True)
class Checked:
    """A request that passed the checks that need no saved input."""

    personal: Mapping[str, object]
    specs: Sequence[JobSpec]
    # The inputs the specs were built from, as declared.
    inputs: Inputs = field(default_factory=Inputs)
    # The results the request takes after (--sref), saved with its inputs.
    references: tuple[Found, ...] = ()


@dataclass(frozen=True)
class Accepted:
    """The jobs queued for a request ([] for a journaled one handled before)."""

    jobs: list[Submitted]
    specs: list[JobSpec]
    # Sentences about how an input was read ("used its first frame").
    notices: tuple[str, ...] = field(default=())


def _keys(inputs: Inputs) -> list[str]:
    images = (inputs.image, inputs.mask, inputs.control, *inputs.references)
    return [image.path for image in images if image]


def actor_of(member: Requester) -> Actor:
    return Actor(member.user_id, member.guild_id, member.channel_id)


class Door:
    def __init__(
        self,
        *,
        jobs: JobService,
        users: UserStore,
        moderation: Moderation,
        commands: CommandStore,
    ) -> None:
        self._jobs = jobs
        self._users = users
        self._moderation = moderation
        self._commands = commands
        self._references = ReferenceFinder(jobs.store, jobs.blobs)

    async def submit(
        self,
        member: Requester,
        draft: Draft,
        inputs: InputSource,
        origin: Origin,
        *,
        messages: Messages | None = None,
    ) -> Accepted | Refusal:
        """Check and admit a request in one go (see `check` and `admit`)."""
        checked = await self.check(member, draft, inputs, origin)
        if isinstance(checked, Refusal):
            await inputs.discard()
            await self.refused(member, draft.command, origin, checked)
            return checked
        return await self.admit(member, draft, inputs, origin, checked, messages=messages)

    async def check(
        self,
        member: Requester,
        draft: Draft,
        inputs: InputSource,
        origin: Origin,
        *,
        rated: bool = True,
    ) -> Checked | Refusal:
        """Everything that needs no saved input, fast enough for Discord's 3 seconds: rate
        (unless `rated` is False: a journaled request took its token before a restart),
        standing, the typed words, the spec from the declared inputs, the added words.

        A refusal is returned unaudited, so a door can answer the member first (Discord
        allows 3 seconds): the door then calls `refused`, as `submit` does."""
        moderation = self._moderation
        if rated and (limited := moderation.rate(member.user_id, member.guild_id)) is not None:
            return Refusal(
                kind=RefusalKind.RATE_LIMITED,
                reason=limited.message(),
                retry_after=limited.retry_after,
            )
        standing = await self._users.standing(member.user_id)
        if (barred := _barred(standing)) is not None:
            return barred
        terms = await moderation.terms(member.guild_id)
        who = actor_of(member)
        typed = draft.typed()
        if (blocked := await moderation.screen(who, typed, draft.command, terms)) is not None:
            return _blocked(blocked)
        personal = standing.defaults
        try:
            words = draft.reference_words() if isinstance(draft, Referring) else ()
            found = await self._references.find(member.user_id, words)
            declared = self._references.joined(inputs, found).declared()
            specs = await draft.build(personal, declared)
        except BadInput as error:
            return Refusal(kind=RefusalKind.BAD_INPUT, reason=str(error))
        added = draft.added(personal, specs)
        if (blocked := await moderation.screen(who, added, draft.command, terms)) is not None:
            return _blocked(blocked)
        return Checked(personal, specs, declared, found)

    async def barred(self, user_id: int) -> Refusal | None:
        """Why the member may not use the bot now (a ban, a timed pause), or None: the
        door's second check, also asked before what is not a job (an API key)."""
        return _barred(await self._users.standing(user_id))

    async def admit(
        self,
        member: Requester,
        draft: Draft,
        inputs: InputSource,
        origin: Origin,
        checked: Checked,
        *,
        messages: Messages | None = None,
    ) -> Accepted | Refusal:
        """After the checks: save the inputs, build the jobs from them (the checked jobs
        themselves when saving changed nothing: a random seed stays the one checked), and
        queue them all or none (quota, queue length). A refusal is audited and its journal
        row settled."""
        inputs = self._references.joined(inputs, checked.references)
        try:
            saved = await inputs.save()
            specs = (
                list(checked.specs)
                if saved == checked.inputs
                else await draft.build(checked.personal, saved)
            )
        except BadInput as error:
            await inputs.discard()
            refusal = Refusal(kind=RefusalKind.BAD_INPUT, reason=str(error))
            await self.refused(member, draft.command, origin, refusal)
            return refusal
        # Stored before a job that reads them is queued (a worker may stage them at once).
        # `save` returns only what this request stored, whether it stored it just now or
        # before the door (the HTTP API's SavedInputs, whose declared inputs are the same
        # keys); a source job's uploads (an action's) reach the spec through `build` only.
        uploads = sorted(set(uploads_of(_keys(saved))))
        await self._jobs.blobs.publish(uploads)
        targets = await messages.placeholders(len(specs)) if messages is not None else []
        try:
            submitted = await self._jobs.submit_many(
                specs, member, targets, repeatable=draft.repeatable()
            )
        except AlreadyHandled:
            log.info("command %s was handled before; nothing to do", member.command_id)
            if messages is not None:
                await messages.discard(targets)
            return Accepted(jobs=[], specs=[])
        except Refused as refused:
            if messages is not None:
                await messages.discard(targets)
            await inputs.discard()
            await self._jobs.blobs.delete(uploads)
            return await self._admission_refused(member, draft.command, origin, refused)
        return Accepted(jobs=submitted, specs=specs, notices=saved.notices)

    async def _admission_refused(
        self, member: Requester, command: str, origin: Origin, refused: Refused
    ) -> Refusal:
        """A refusal of the job service's admission, typed; the store audited and settled a
        ban or quota refusal itself, a full queue is audited here (the only other kind)."""
        if isinstance(refused, UserBanned):
            return Refusal(kind=RefusalKind.BANNED, reason=refused.message)
        if isinstance(refused, OverQuotaError):
            over = refused.over
            return Refusal(
                kind=RefusalKind.OVER_QUOTA,
                reason=refused.message,
                limit=over.limit,
                until=over.resets_at,
                retry_after=None if over.resets_at is not None else await self.seconds_per_job(),
            )
        assert isinstance(refused, QueueFull), f"an admission refusal of no known kind: {refused}"
        waiting = await self._jobs.store.waiting_count()
        refusal = Refusal(
            kind=RefusalKind.QUEUE_FULL,
            reason=refused.message,
            retry_after=waiting * await self.seconds_per_job(),
        )
        await self.refused(member, command, origin, refusal)
        return refusal

    async def seconds_per_job(self) -> float:
        """About how long a job takes from the queue's side: the measured pace, or
        DEFAULT_SECONDS_PER_JOB before there is one."""
        per_job = (await self._jobs.pace()).seconds_per_job()
        return DEFAULT_SECONDS_PER_JOB if per_job is None else per_job

    async def refused(
        self, member: Requester, command: str, origin: Origin, refusal: Refusal
    ) -> None:
        """Audit a refusal (`<command>.refused`, with its kind and origin, a time as ISO
        8601) and settle the request's journal row, so it is not completed again after a
        restart."""
        await self._jobs.store.record_refusal(
            f"{command}.refused",
            member.user_id,
            member.guild_id,
            member.channel_id,
            refusal.plain(),
            params={"origin": origin.value}
            | ({"key_id": member.api_key_id} if member.api_key_id is not None else {}),
            kind=refusal.kind.value,
        )
        if member.command_id is not None:
            await self._commands.settle(member.command_id, f"refused: {refusal.kind.value}")


# Retry-After for a full queue or a quota of concurrent jobs before any pace is measured.
DEFAULT_SECONDS_PER_JOB = 10.0


def _barred(standing: Standing) -> Refusal | None:
    return barred_by(standing.ban_reason, standing.paused_until)


def barred_by(ban_reason: str | None, paused_until: datetime | None) -> Refusal | None:
    """The rule of a member's standing: banned (and why), or paused until a time."""
    if ban_reason is not None:
        return Refusal(kind=RefusalKind.BANNED, reason=f"You cannot use this bot: {ban_reason}")
    if paused_until is not None:
        return paused(paused_until)
    return None


def _blocked(blocked: Blocked) -> Refusal:
    return Refusal(
        kind=RefusalKind.BLOCKED, reason=blocked.message, term=blocked.term, until=blocked.until
    )
