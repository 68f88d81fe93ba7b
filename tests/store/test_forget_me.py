"""Forget-me against the whole schema: every place a member's words can be stored is
listed here, written through the stores that write it, and read back redacted.

The lists are checked against the models, so a new text column (or a new text field of
a job spec) fails these tests until it is classified below.
"""

from __future__ import annotations

import json
import typing
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from pydantic_core import to_jsonable_python
from sqlalchemy import JSON, String, TypeDecorator, select
from sqlalchemy import Enum as SqlEnum
from sqlalchemy.types import TypeEngine

from bot.jobs.spec import JobSpec
from bot.store.api_keys import ApiKeyStore
from bot.store.audit import Actor
from bot.store.commands import CommandStore, NewCommand
from bot.store.editor_links import IssuedLink, LinkStore
from bot.store.jobs import NewOutput, Requester
from bot.store.models import Base, Job, JobState
from bot.store.users import REDACTED
from tests.stores import Stores, spec

# What the member wrote, everywhere they could write; found nowhere after forget-me.
WORDS = "zebra-crossing-secret"
DANA = Requester(user_id=444, user_name=f"dana {WORDS}", guild_id=10, channel_id=20)

# Columns that hold what a member wrote (or their name), and where it comes from.
MEMBER_TEXT = {
    "users.name": "their Discord name",
    "users.defaults": "/settings, a default negative prompt among them",
    "jobs.spec": "the words of a job: see SPEC_WORDS",
    "outputs.recipe": "an image's recipe repeats its prompt",
    "audit_log.params": "see bot.store.users.MEMBER_TEXT_PARAMS",
    "api_keys.name": "the name given to /apikey create",
    "received_commands.user_name": "their Discord name",
    "received_commands.options": "the options of a command, as typed",
    "received_commands.outcome": "a refusal's sentence, which may quote them",
    "editor_links.user_name": "their Discord name (forget-me deletes their links)",
}
# Every other column that can hold text, and why a member's words are never in it.
OTHER_TEXT = {
    "users.ban_reason": "an admin's words (kept while the ban stands)",
    "users.cooldown_reason": "the bot's or an admin's words",
    "jobs.id": "an id",
    "jobs.model": "a configured model's name",
    "jobs.seeds": "numbers",
    "jobs.error": "the bot's or the engine's sentence",
    "jobs.device": "a configured device",
    "jobs.interaction_token": "Discord's credential, not words (cleared by forget-me)",
    "jobs.batch_id": "an id",
    "jobs.client": "discord or http",
    "jobs.moderation": "the image classifier's scores",
    "outputs.job_id": "an id",
    "outputs.path": "a stored file's path",
    "outputs.sha256": "a hash",
    "outputs.flags": "moderation flags",
    "audit_log.action": "the bot's vocabulary",
    "audit_log.target": "an id",
    "audit_log.outcome": "the bot's vocabulary",
    "quota_reservations.job_id": "an id",
    "usage_ledger.job_id": "an id",
    "usage_ledger.currency": "configured",
    "api_keys.lookup": "a random id",
    "api_keys.key_hash": "a hash",
    "api_keys.role_ids": "ids",
    "heartbeats.service": "the bot's vocabulary",
    "blocklist.term": "an admin's words",
    "guild_settings.settings": "an admin's settings",
    "received_commands.command": "the command's name",
    "received_commands.token": "Discord's credential, not words (the row goes)",
    "received_commands.role_ids": "ids",
    "jobs.result_key": "a hash of a job's recipe (cleared by forget-me: their words are in it)",
    "jobs.cached_from": "an id",
    "jobs.batch_key": "a hash of the settings a batch shares (no prompt: size, steps, model, ...)",
    "jobs.claimed_by": "a worker's id (host, process)",
    "jobs.delivery_claimed_by": "a front door's id (host, process)",
    "jobs.preview": "a stored file's key",
    "editor_links.nonce": "a random id",
    "editor_links.job_id": "an id",
    "editor_links.role_ids": "ids",
}
# JobSpec fields that can hold text: the member's words, and the others.
SPEC_WORDS = ("prompt", "negative_prompt", "blend")
SPEC_OTHER = (
    "model",
    "sampler",
    "init_image",
    "mask_image",
    "control_image",
    "source_job",
    "references",
)


def text_columns() -> list[str]:
    """Every column whose type can hold free text (enums hold their own values only)."""
    return [
        f"{table.name}.{column.name}"
        for table in Base.metadata.sorted_tables
        for column in table.columns
        if isinstance(stored_as(column.type), String | JSON)
        and not isinstance(column.type, SqlEnum)
    ]


def stored_as(kind: TypeEngine[Any]) -> TypeEngine[Any]:
    """The type a column's values are stored as (a TypeDecorator's underlying type)."""
    return kind.impl_instance if isinstance(kind, TypeDecorator) else kind


def holds_text(annotation: Any) -> bool:
    """Whether a field of this type can hold free text (a StrEnum cannot)."""
    if isinstance(annotation, type):
        return issubclass(annotation, str) and not issubclass(annotation, Enum)
    return any(holds_text(arg) for arg in typing.get_args(annotation))


def test_every_text_column_is_classified() -> None:
    columns = text_columns()
    assert sorted(columns) == sorted({*MEMBER_TEXT, *OTHER_TEXT})
    assert not set(MEMBER_TEXT) & set(OTHER_TEXT)


def test_every_text_field_of_a_job_spec_is_classified() -> None:
    fields = [name for name, info in JobSpec.model_fields.items() if holds_text(info.annotation)]
    assert sorted(fields) == sorted((*SPEC_WORDS, *SPEC_OTHER))


async def columns_holding(stores: Stores, words: str) -> set[str]:
    """The text columns in which some row holds `words`."""
    found = set()
    async with stores.sessions() as session:
        for name in text_columns():
            table, column = name.split(".")
            values = await session.scalars(select(Base.metadata.tables[table].c[column]))
            if any(words in json.dumps(value, default=to_jsonable_python) for value in values):
                found.add(name)
    return found


async def write_everywhere(stores: Stores) -> None:
    """The member's words, written where Atelier writes them."""
    actor = Actor(DANA.user_id, DANA.guild_id, DANA.channel_id)
    await stores.users.set_defaults(DANA.user_id, DANA.user_name, {"negative": WORDS}, actor)
    # A Discord job and an HTTP job whose weighted prompts make a blend.
    typed = spec(prompt=f"a fox {WORDS}", negative_prompt=WORDS)
    blend = spec(prompt="a fox, a hen", blend=[[f"a fox {WORDS}", 0.7], ["a hen", 0.3]])
    await stores.quotas.admit("discord", DANA, typed, "tiny", [1])
    await stores.quotas.admit("http", DANA, blend, "tiny", [2])
    await stores.jobs.transition("http", JobState.QUEUED, JobState.CANCELLED, "cancelled")
    await stores.jobs.transition("discord", JobState.QUEUED, JobState.RUNNING, device="cpu")
    recipe = {"prompt": typed.prompt, "negative_prompt": WORDS}
    await stores.jobs.succeed(
        "discord", 1.0, [NewOutput(0, "images/discord/0.png", "0" * 64, 1, 64, 64, recipe)]
    )
    await ApiKeyStore(stores.sessions).create(
        DANA.user_id, DANA.user_name, f"laptop {WORDS}", DANA.guild_id, [], actor
    )
    # A refusal quotes what was typed; an HTTP refusal names the path asked for.
    await stores.jobs.record_refusal(
        "imagine.refused", DANA.user_id, 10, 20, f"Unknown model `{WORDS}`.", kind="input"
    )
    await stores.jobs.record_refusal(
        "http.refused",
        DANA.user_id,
        10,
        None,
        "Unknown engine.",
        params={"path": f"/v1/generation/{WORDS}/text-to-image"},
    )
    journal = CommandStore(stores.sessions)
    await journal.receive(
        NewCommand(
            interaction_id=71,
            command="imagine",
            user_id=DANA.user_id,
            user_name=DANA.user_name,
            guild_id=10,
            channel_id=20,
            token="t",
            options={"given": {"prompt": WORDS}},
            role_ids=[],
            upload_limit=None,
        )
    )
    await journal.settle(71, f"refused: Unknown model `{WORDS}`.")
    link = IssuedLink(
        nonce="n" * 32,
        job_id="discord",
        image=1,
        user_id=DANA.user_id,
        user_name=DANA.user_name,
        guild_id=10,
        channel_id=20,
        role_ids=(),
        nsfw_channel=False,
        expires_at=datetime.now(UTC) + timedelta(minutes=10),
    )
    await LinkStore(stores.sessions).issue(link, "vary_region")


async def test_forget_me_redacts_every_column_that_holds_a_members_words(
    stores: Stores,
) -> None:
    await write_everywhere(stores)
    # Each listed column was written above (the list is not larger than the writes).
    assert await columns_holding(stores, WORDS) == set(MEMBER_TEXT)

    forgotten = await stores.users.forget(DANA.user_id, Actor(DANA.user_id))

    assert await columns_holding(stores, WORDS) == set()
    async with stores.sessions() as session:
        jobs = (await session.scalars(select(Job))).all()
    specs = {job.id: job.spec for job in jobs}
    assert {job.user_id for job in jobs} == {forgotten.pseudonym}
    for job_spec in specs.values():
        assert (job_spec.prompt, job_spec.negative_prompt) == (REDACTED, REDACTED)
    # A blend keeps its weights, not its words.
    assert specs["http"].blend == ((REDACTED, 0.7), (REDACTED, 0.3))
    # The audit trail keeps what happened, under the pseudonym.
    page = await stores.audit.query(forgotten.pseudonym, limit=None)
    params = {entry.action: entry.params for entry in page.entries}
    assert params["apikey.create"]["name"] == REDACTED
    assert params["imagine.refused"] == {"reason": REDACTED, "kind": "input"}
    assert params["http.refused"]["path"] == REDACTED
