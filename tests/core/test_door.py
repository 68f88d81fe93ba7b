"""The core's door and actions, once for each kind of refusal, on a real SQLite file.

The cases are a table keyed by RefusalKind and the test runs over the enum, so a
kind added later fails here until it has a case. No engine runs: admitted jobs wait.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from bot.core import Core
from bot.core.actions import BY_NAME, ActionName
from bot.core.door import NO_INPUTS, Accepted, Draft, Origin, SavedInputs
from bot.core.drafts import OptionsDraft
from bot.core.refusals import Refusal, RefusalKind
from bot.jobs.service import JobService
from bot.jobs.spec import BadInput, Inputs, JobSpec, Options
from bot.moderation.service import Moderation, ScreenedText
from bot.store.audit import Actor
from bot.store.commands import CommandStore
from bot.store.editor_links import LinkStore
from bot.store.guilds import GuildStore
from bot.store.jobs import Requester
from bot.store.models import AuditEntry, JobState, utcnow
from tests.stores import Stores, open_stores, output, service_on

CONFIG = """
[moderation]
blocklist = ["gore"]
member_burst = 3
member_per_minute = 1

[quota]
images_per_day = 4

[queue]
max_length = 3
"""
MEMBER = Requester(user_id=501, user_name="dana", guild_id=7, channel_id=8)
OTHER = Requester(user_id=502, user_name="eli", guild_id=7, channel_id=8)


@dataclass
class World:
    stores: Stores
    jobs: JobService
    core: Core

    def draft(self, prompt: str = "a lighthouse", **options: object) -> OptionsDraft:
        return OptionsDraft(
            command="imagine",
            options=Options.model_validate({"prompt": prompt, "seed": 1, **options}),
            catalog=self.core.catalog,
        )

    async def submit(
        self, member: Requester = MEMBER, prompt: str = "a lighthouse", **options: object
    ) -> Accepted | Refusal:
        draft = self.draft(prompt, **options)
        return await self.core.door.submit(member, draft, NO_INPUTS, Origin.SLASH)

    async def finished_job(self, member: Requester = MEMBER, images: int = 1) -> str:
        """A job of `member` that succeeded with `images` images stored as files."""
        accepted = await self.submit(member, count=images)
        assert isinstance(accepted, Accepted)
        job_id = accepted.jobs[0].job.id
        store = self.stores.jobs
        await store.transition(job_id, JobState.QUEUED, JobState.RUNNING, device="cpu")
        outputs = [output(job_id, n) for n in range(images)]
        for made in outputs:
            path = self.stores.config.storage.data_dir / made.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"png")
        await store.succeed(job_id, 1.0, outputs)
        return job_id


def world_of(stores: Stores, jobs: JobService) -> World:
    """The core over `stores` and the job service `jobs`."""
    config = stores.config
    moderation = Moderation(
        config.moderation, GuildStore(stores.sessions), stores.users, stores.audit
    )
    core = Core.build(
        config=config,
        jobs=jobs,
        users=stores.users,
        moderation=moderation,
        commands=CommandStore(stores.sessions),
        quotas=stores.quotas,
        links=LinkStore(stores.sessions),
    )
    return World(stores, jobs, core)


@pytest.fixture
async def world(tmp_path: Path, tiny_model_dir: Path) -> AsyncIterator[World]:
    async with open_stores(tmp_path, CONFIG, tiny_model_dir) as stores:
        yield world_of(stores, service_on(stores))


async def rate_limited(world: World) -> Refusal | Accepted:
    for _ in range(3):  # the burst
        assert isinstance(await world.submit(), Accepted)
    return await world.submit()


async def banned(world: World) -> Refusal | Accepted:
    await world.stores.users.ban(MEMBER.user_id, "spam", Actor(1, 7, 8))
    return await world.submit()


async def paused(world: World) -> Refusal | Accepted:
    until = utcnow() + timedelta(minutes=30)
    await world.stores.users.pause(MEMBER.user_id, until, "strikes", Actor(None, 7))
    return await world.submit()


async def blocked(world: World) -> Refusal | Accepted:
    return await world.submit(prompt="a scene of g o r e")


async def bad_input(world: World) -> Refusal | Accepted:
    return await world.submit(model="no-such-model")


async def over_quota(world: World) -> Refusal | Accepted:
    await world.submit(count=3)
    return await world.submit(count=2)


async def queue_full(world: World) -> Refusal | Accepted:
    for member in range(3):
        await world.submit(Requester(user_id=600 + member, user_name="m", guild_id=7))
    return await world.submit(OTHER)


async def not_found(world: World) -> Refusal | Accepted | object:
    return await world.core.acting.find(BY_NAME[ActionName.VARIATION], "0123456789")


async def not_ready(world: World) -> Refusal | Accepted | object:
    accepted = await world.submit()
    assert isinstance(accepted, Accepted)
    return await world.core.acting.find(BY_NAME[ActionName.VARIATION], accepted.jobs[0].job.id)


async def gone(world: World) -> Refusal | Accepted | object:
    job_id = await world.finished_job()
    job = await world.stores.jobs.get(job_id)
    (world.stores.config.storage.data_dir / job.outputs[0].path).unlink()
    return await world.core.acting.source(BY_NAME[ActionName.UPSCALE], job, 1)


async def not_allowed(world: World) -> Refusal | Accepted | object:
    job = await world.stores.jobs.get(await world.finished_job())
    return world.core.acting.allowed(BY_NAME[ActionName.DELETE], job, OTHER)


async def too_late(world: World) -> Refusal | Accepted | object:
    job_id = await world.finished_job()
    running = await world.stores.jobs.get(job_id)
    return await world.core.acting.cancel(running, MEMBER)


CASES: dict[RefusalKind, Callable[[World], Awaitable[object]]] = {
    RefusalKind.RATE_LIMITED: rate_limited,
    RefusalKind.BANNED: banned,
    RefusalKind.PAUSED: paused,
    RefusalKind.BLOCKED: blocked,
    RefusalKind.BAD_INPUT: bad_input,
    RefusalKind.OVER_QUOTA: over_quota,
    RefusalKind.QUEUE_FULL: queue_full,
    RefusalKind.NOT_FOUND: not_found,
    RefusalKind.NOT_READY: not_ready,
    RefusalKind.GONE: gone,
    RefusalKind.NOT_ALLOWED: not_allowed,
    RefusalKind.TOO_LATE: too_late,
}
# Refused by the door itself, so audited by it as `imagine.refused` with their kind.
AUDITED_BY_THE_DOOR = {
    RefusalKind.RATE_LIMITED,
    RefusalKind.BANNED,
    RefusalKind.PAUSED,
    RefusalKind.BLOCKED,
    RefusalKind.BAD_INPUT,
    RefusalKind.QUEUE_FULL,
}


@pytest.mark.parametrize("kind", list(RefusalKind))
async def test_each_kind_of_refusal_is_typed_and_plain(world: World, kind: RefusalKind) -> None:
    refusal = await CASES[kind](world)

    assert isinstance(refusal, Refusal) and refusal.kind is kind, refusal
    # One plain sentence: no Discord markup, the time left for the door to show.
    assert "<t:" not in refusal.reason and "<@" not in refusal.reason
    assert ("{until}" in refusal.reason) == (refusal.until is not None)
    assert (refusal.until is not None) == (kind in (RefusalKind.PAUSED, RefusalKind.OVER_QUOTA))
    if kind in (RefusalKind.RATE_LIMITED, RefusalKind.QUEUE_FULL):
        assert refusal.retry_after is not None and refusal.retry_after > 0
    if kind is RefusalKind.OVER_QUOTA:
        assert refusal.limit == "daily limit of 4 images" and refusal.until is not None
    if kind is RefusalKind.BLOCKED:
        assert refusal.term == "gore"
    if kind in AUDITED_BY_THE_DOOR:
        entries = (await world.stores.audit.query(action="imagine.refused")).entries
        assert [(e.params["kind"], e.params["origin"]) for e in entries][-1:] == [
            (kind.value, "slash")
        ]


async def test_the_door_checks_in_one_order_rate_first(world: World) -> None:
    """A banned member over the rate limit hears of the rate, and the blocklist is not
    read for a banned member (no strike)."""
    await world.stores.users.ban(MEMBER.user_id, "spam", Actor(1, 7, 8))
    kinds = [getattr(await world.submit(prompt="gore"), "kind", None) for _ in range(4)]
    assert kinds == [RefusalKind.BANNED] * 3 + [RefusalKind.RATE_LIMITED]
    assert await world.stores.count(AuditEntry, AuditEntry.action == "moderation.blocked") == 0


async def test_words_a_build_adds_are_screened_after_it(world: World) -> None:
    await world.stores.users.set_defaults(
        MEMBER.user_id, "dana", {"negative_prompt": "gore"}, Actor(MEMBER.user_id, 7, 8)
    )
    refusal = await world.submit()
    assert isinstance(refusal, Refusal) and refusal.kind is RefusalKind.BLOCKED
    assert "default negative prompt" in refusal.reason


async def test_saved_inputs_of_a_refused_request_are_removed(world: World, tmp_path: Path) -> None:
    folder = world.stores.config.storage.data_dir / "inputs" / "abc"
    folder.mkdir(parents=True)
    (folder / "image.png").write_bytes(b"png")
    source = SavedInputs(Inputs(), folder)
    refusal = await world.core.door.submit(MEMBER, world.draft("gore"), source, Origin.HTTP)
    assert isinstance(refusal, Refusal) and not folder.exists()


async def test_an_action_draft_is_checked_like_any_request(world: World) -> None:
    """V on another member's result: the clicker's job, their quota, their words screened."""
    job = await world.stores.jobs.get(await world.finished_job(images=2))
    action = BY_NAME[ActionName.VARIATION]
    source = await world.core.acting.source(action, job, 2)
    assert not isinstance(source, Refusal)
    accepted = await world.core.door.submit(
        OTHER, world.core.acting.draft(action, source), NO_INPUTS, Origin.BUTTON
    )
    assert isinstance(accepted, Accepted)
    (spec,) = accepted.specs
    assert (spec.source_job, spec.source_image, spec.count) == (job.id, 2, 1)
    assert spec.strength == world.stores.config.generation.variation_strength
    assert accepted.jobs[0].job.user_id == OTHER.user_id


async def test_a_remix_needs_its_words(world: World) -> None:
    job = await world.stores.jobs.get(await world.finished_job())
    action = BY_NAME[ActionName.REMIX]
    source = await world.core.acting.source(action, job, None)
    assert not isinstance(source, Refusal)
    with pytest.raises(BadInput):
        world.core.acting.draft(action, source)


@dataclass
class Recording:
    """A draft that keeps every spec list it builds (a variation draws a new seed each time)."""

    inner: Draft
    built: list[list[JobSpec]]

    @property
    def command(self) -> str:
        return self.inner.command

    def typed(self) -> Sequence[ScreenedText]:
        return self.inner.typed()

    async def build(self, personal: Mapping[str, object], inputs: Inputs) -> list[JobSpec]:
        self.built.append(await self.inner.build(personal, inputs))
        return self.built[-1]

    def added(self, personal: Mapping[str, object], specs: Sequence[JobSpec]) -> list[ScreenedText]:
        return self.inner.added(personal, specs)

    def repeatable(self) -> bool:
        return self.inner.repeatable()


async def test_the_job_queued_is_the_one_checked(world: World) -> None:
    """Built once when no input is saved: the seed a variation drew is the one checked and
    queued (the HTTP door submits in one go)."""
    job = await world.stores.jobs.get(await world.finished_job())
    action = BY_NAME[ActionName.VARIATION]
    source = await world.core.acting.source(action, job, 1)
    assert not isinstance(source, Refusal)
    draft = Recording(world.core.acting.draft(action, source), [])
    accepted = await world.core.door.submit(OTHER, draft, NO_INPUTS, Origin.HTTP)
    assert isinstance(accepted, Accepted)
    (built,) = draft.built
    queued = await world.stores.jobs.get(accepted.jobs[0].job.id)
    assert queued.spec == built[0] == accepted.specs[0]


class Unusable:
    """Attachments whose description already rules them out (not an image, too large)."""

    def declared(self) -> Inputs:
        raise BadInput("The `image` attachment is not an image; please attach a PNG or JPEG.")

    async def save(self) -> Inputs:
        raise AssertionError("never saved")

    async def discard(self) -> None:
        return None


async def test_inputs_refused_as_declared_are_bad_input(world: World) -> None:
    refusal = await world.core.door.submit(MEMBER, world.draft(), Unusable(), Origin.SLASH)
    assert isinstance(refusal, Refusal) and refusal.kind is RefusalKind.BAD_INPUT
    assert refusal.reason.startswith("The `image` attachment is not an image")
