"""The moderation service: config and admin terms, every text screened, strikes and pauses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.moderation.service import Moderation, ScreenedText, TextKind
from bot.store.audit import Actor
from bot.store.guilds import GuildStore
from bot.store.models import utcnow
from tests.stores import Stores, open_stores

GUILD, OTHER = 10, 11
DANA = Actor(444, GUILD, 20)
ADMIN = Actor(1, GUILD, 20)
CONFIG = """
[moderation]
blocklist = ["Gore", "  blood   bath "]
strikes = 3
strike_window_minutes = 10
strike_cooldown_minutes = 30
log_channel_id = 99
"""


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[Stores]:
    async with open_stores(tmp_path, CONFIG) as opened:
        yield opened


@pytest.fixture
def told() -> list[str]:
    return []


@pytest.fixture
def moderation(stores: Stores, told: list[str]) -> Moderation:
    guilds = GuildStore(stores.sessions)
    return Moderation(stores.config.moderation, guilds, stores.users, stores.audit, told.append)


async def test_config_terms_join_the_admins_per_server_and_global_terms(
    stores: Stores, moderation: Moderation
) -> None:
    guilds = GuildStore(stores.sessions)
    await guilds.block("kettle", ADMIN)
    await guilds.block("teapot", ADMIN, everywhere=True)
    assert await moderation.terms(GUILD) == ["gore", "blood bath", "kettle", "teapot"]
    assert await moderation.terms(OTHER) == ["gore", "blood bath", "teapot"]


async def test_in_a_dm_only_the_config_and_global_terms_apply(
    stores: Stores, moderation: Moderation
) -> None:
    """A DM has no server, so no server's own terms: README's Moderation rule."""
    guilds = GuildStore(stores.sessions)
    await guilds.block("kettle", ADMIN)
    await guilds.block("teapot", ADMIN, everywhere=True)
    in_dm = Actor(DANA.user_id)  # /imagine in a DM: no guild, no channel of a server
    assert (
        await moderation.screen(in_dm, [ScreenedText(TextKind.PROMPT, "a kettle")], "imagine")
        is None
    )
    for term in ("teapot", "gore"):
        blocked = await moderation.screen(
            in_dm, [ScreenedText(TextKind.PROMPT, f"a {term}")], "imagine"
        )
        assert blocked is not None and blocked.term == term
    assert (
        await moderation.screen(DANA, [ScreenedText(TextKind.PROMPT, "a kettle")], "imagine")
        is not None
    )


@pytest.mark.parametrize(
    ("where", "text", "said"),
    [
        (TextKind.PROMPT, "a g0re scene", "Your prompt contains `gore`"),
        (TextKind.NEGATIVE, "b l o o d b a t h", "Your negative prompt contains `blood bath`"),
        (TextKind.DEFAULTS, "blurry, gorë", "Your own default negative prompt contains `gore`"),
        (TextKind.STYLE, "cinematic, g.o.r.e", "The style you chose adds `gore`"),
        (TextKind.SOURCE, "gоre", "The prompt of that image contains `gore`"),  # Cyrillic о
    ],
)
async def test_every_text_a_job_uses_is_screened_and_each_hit_audited(
    stores: Stores, moderation: Moderation, where: TextKind, text: str, said: str
) -> None:
    clean = [
        ScreenedText(TextKind.PROMPT, "a gorgeous violet sky"),
        ScreenedText(TextKind.NEGATIVE, None),
    ]
    blocked = await moderation.screen(DANA, [*clean, ScreenedText(where, text)], "imagine")
    assert blocked is not None and blocked.where == where
    assert blocked.message.startswith(said)
    (entry,) = (await stores.audit.query(action="moderation.blocked")).entries
    assert (entry.actor_id, entry.outcome) == (DANA.user_id, "refused")
    assert entry.params["where"] == where and entry.params["command"] == "imagine"
    assert await moderation.screen(DANA, clean, "imagine") is None


async def test_a_request_screened_in_steps_reads_the_terms_once(
    stores: Stores, moderation: Moderation
) -> None:
    terms = await moderation.terms(GUILD)
    await GuildStore(stores.sessions).block("kettle", ADMIN)  # after the request's read
    assert (
        await moderation.screen(DANA, [ScreenedText(TextKind.PROMPT, "a kettle")], "imagine", terms)
        is None
    )
    blocked = await moderation.screen(
        DANA, [ScreenedText(TextKind.PROMPT, "a g0re kettle")], "imagine", terms
    )
    assert blocked is not None and blocked.message.startswith("Your prompt contains `gore`")
    assert (
        await moderation.screen(DANA, [ScreenedText(TextKind.PROMPT, "a kettle")], "imagine")
        is not None
    )


async def test_repeated_blocked_prompts_pause_the_member_and_tell_the_admins(
    stores: Stores, moderation: Moderation, told: list[str]
) -> None:
    for _ in range(2):
        blocked = await moderation.screen(DANA, [ScreenedText(TextKind.PROMPT, "gore")], "imagine")
        assert blocked is not None and "paused" not in blocked.message
    assert await stores.users.cooldown_until(DANA.user_id) is None and told == []

    third = await moderation.screen(DANA, [ScreenedText(TextKind.PROMPT, "g o r e")], "imagine")

    # The time is left for each door to show in its own format.
    assert third is not None and "you are paused until {until}." in third.message
    assert "3 blocked prompts in 10 minutes" in third.message
    assert third.until == await stores.users.cooldown_until(DANA.user_id)
    assert third.until is not None and third.until > utcnow()
    (note,) = told
    assert f"<@{DANA.user_id}>" in note and "30 minutes" in note and "`gore`" in note
    (pause,) = (await stores.audit.query(action="user.cooldown")).entries
    assert pause.target == f"user:{DANA.user_id}"
    # Another member's strikes are their own.
    assert await stores.users.cooldown_until(ADMIN.user_id) is None


async def test_a_notifier_that_fails_never_fails_the_screening(stores: Stores) -> None:
    def broken(text: str) -> None:
        raise RuntimeError("Discord is down")

    moderation = Moderation(
        stores.config.moderation, GuildStore(stores.sessions), stores.users, stores.audit, broken
    )
    for _ in range(3):
        blocked = await moderation.screen(DANA, [ScreenedText(TextKind.PROMPT, "gore")], "imagine")
    assert blocked is not None and "paused" in blocked.message


async def test_the_rate_limit_is_taken_per_request(moderation: Moderation) -> None:
    results = [moderation.rate(DANA.user_id, GUILD) for _ in range(6)]
    assert results[:5] == [None] * 5
    assert results[5] is not None and results[5].scope == "member"
