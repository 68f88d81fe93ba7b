"""Doing a registered action (bot.core.actions) to a stored job, for either door.

`find` reads the job an action names and refuses, typed, what it cannot act on
(not stored, not in a state the action applies to, images gone); `draft` makes
the Draft the door checks and queues; `cancel` and `delete_images` are the
owner's actions, and `allowed` the rule of who may use them (a door says who its
admins are: Discord knows them, the HTTP API has none).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from ..blobs import job_folder
from ..config import Config
from ..jobs.service import JobService
from ..jobs.spec import BadInput, InputImage, Inputs, JobSpec
from ..moderation.service import ScreenedText
from ..store.jobs import JobNotFound, Requester
from ..store.models import Job
from .actions import FINISHED, Action, ActionName, Source, Tweak, Words
from .refusals import Refusal, RefusalKind

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActionDraft:
    """A new job an action makes from `source` (a Draft for bot.core.door), audited (and its
    blocked words counted) as `command`."""

    action: Action
    source: Source
    tweak: Tweak
    command: str

    def typed(self) -> Sequence[ScreenedText]:
        return self.action.typed(self.tweak.words)

    async def build(self, personal: Mapping[str, object], inputs: Inputs) -> list[JobSpec]:
        assert self.action.transform is not None
        # A mask the request brought (Vary (Region)'s painted region), as saved.
        tweak = self.tweak if inputs.mask is None else replace(self.tweak, mask=inputs.mask)
        return [self.action.transform(self.source, tweak)]

    def added(self, personal: Mapping[str, object], specs: Sequence[JobSpec]) -> list[ScreenedText]:
        return [
            text
            for spec in specs
            for text in self.action.added(self.source, spec, self.tweak.words)
        ]

    def repeatable(self) -> bool:
        # An action draws its seed, or keeps its source's to make it again (/recreate):
        # either way it asks for a run, never for a stored result.
        return False


@dataclass(frozen=True)
class JournaledDraft:
    """A job whose spec was built and checked before a restart (a journaled click): it is
    queued as it was, without checking it again."""

    command: str
    spec: JobSpec

    def typed(self) -> Sequence[ScreenedText]:
        return []

    async def build(self, personal: Mapping[str, object], inputs: Inputs) -> list[JobSpec]:
        return [self.spec]

    def added(self, personal: Mapping[str, object], specs: Sequence[JobSpec]) -> list[ScreenedText]:
        return []

    def repeatable(self) -> bool:
        return False  # an action's job, as ActionDraft's


class Acting:
    def __init__(self, *, jobs: JobService, config: Config) -> None:
        self._jobs = jobs
        self._store = jobs.store
        self._config = config

    @staticmethod
    def allowed(
        action: Action, job: Job, member: Requester, *, admin: bool = False
    ) -> Refusal | None:
        """Anyone may make a new job from another member's result (it is theirs, charged
        to them); an owner-only action needs the job's owner, or an `admin` (a door says
        who its admins are)."""
        if not action.owner_only or admin or job.user_id == member.user_id:
            return None
        if action.name is ActionName.CANCEL:
            reason = "Only the member who asked for this job (or an admin) can cancel it."
        else:
            reason = "Only the member who made these images (or an admin) can delete them."
        return Refusal(kind=RefusalKind.NOT_ALLOWED, reason=reason)

    async def cancel(self, job: Job, member: Requester) -> Job | Refusal:
        """Cancel a queued or running job; a running one stops within a step, and the answer
        waits for its end. The job as it ended (or still stopping), or TOO_LATE when its
        result was already on its way."""
        outcome = await self._jobs.cancel_and_wait(job.id, member.user_id)
        if outcome.too_late:
            reason = (
                f"Job `{job.id}` had already ended ({outcome.job.state}): nothing was cancelled."
            )
            return Refusal(kind=RefusalKind.TOO_LATE, reason=reason)
        return outcome.job

    async def find(self, action: Action, job_id: str) -> Job | Refusal:
        """The job `action` names, when the action applies to it."""
        try:
            job = await self._store.get(job_id)
        except JobNotFound:
            return Refusal(kind=RefusalKind.NOT_FOUND, reason="That job is no longer stored.")
        return self.applies(action, job) or job

    @staticmethod
    def applies(action: Action, job: Job) -> Refusal | None:
        """Why `action` does not apply to `job` in its state, or None when it does."""
        if job.state in action.states:
            return None
        if action.states == FINISHED:
            reason = f"Job `{job.id}` has no images to reuse."
        else:
            reason = f"Job `{job.id}` is {job.state}: it cannot be {_done(action)} now."
        return Refusal(kind=RefusalKind.NOT_READY, reason=reason)

    async def source(self, action: Action, job: Job, number: int | None) -> Source | Refusal:
        """What the action reads of `job`: image `number` for a per-image action; refused
        when an image or input it needs is no longer stored."""
        spec = job.spec
        if not action.per_image:
            inputs = spec.input_paths.values()
            if action.makes_job and await self._missing(inputs):
                reason = "The image this job started from is no longer stored; it cannot run again."
                return Refusal(kind=RefusalKind.GONE, reason=reason)
            return Source(job_id=job.id, spec=spec)
        if not job.outputs:  # forgotten or expired
            reason = f"The images of job `{job.id}` are no longer stored; they cannot be reused."
            return Refusal(kind=RefusalKind.GONE, reason=reason)
        if number is None or not 1 <= number <= len(job.outputs):
            images = len(job.outputs)
            reason = f"Job `{job.id}` has {images} image(s): say which, from 1 to {images}."
            return Refusal(kind=RefusalKind.BAD_INPUT, reason=reason)
        output = job.outputs[number - 1]
        if await self._missing([output.path]):
            reason = f"Image {number} of job `{job.id}` is no longer stored; it cannot be reused."
            return Refusal(kind=RefusalKind.GONE, reason=reason)
        return Source(
            job_id=job.id,
            spec=spec,
            number=number,
            image=InputImage(output.path, output.width, output.height),
            image_seed=output.seed,
        )

    def draft(
        self,
        action: Action,
        source: Source,
        words: Words | None = None,
        *,
        command: str | None = None,
    ) -> ActionDraft:
        """The Draft of a new job `action` makes from `source` (`words` for a remix), audited
        as `command` (the action's own, `button.<name>`, unless a door names another)."""
        if action.takes_words and words is None:
            raise BadInput("A remix needs the new prompt.")
        tweak = Tweak(
            strength=action.strength_in(self._config.generation),
            words=words if action.takes_words else None,
            models=self._config.models,
            styles=self._config.styles,
        )
        return ActionDraft(action, source, tweak, command or action.command)

    async def delete_images(self, job: Job, member: Requester) -> list[str]:
        """🗑️: forget the job's images (rows audited first, files after); their paths."""
        paths = await self._store.delete_outputs(
            job.id, member.user_id, member.guild_id, member.channel_id
        )
        await self._jobs.blobs.delete(paths)
        await self._jobs.blobs.delete_under(job_folder(job.id))  # anything else it left
        log.info("job %s: %d image(s) deleted by user %d", job.id, len(paths), member.user_id)
        return paths

    async def _missing(self, keys: Iterable[str]) -> bool:
        return not all([await self._jobs.blobs.exists(key) for key in keys])


def _done(action: Action) -> str:
    done = {"cancel": "cancelled", "delete": "deleted", "recreate": "made again"}
    return done.get(action.name.value, "used")
