"""Vary (Region)'s editor links (bot.core.editor): signed over the job, image, member,
expiry and nonce; refused when changed, expired, unknown or used; one use by a
compare-and-set; every step audited."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import stat
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.config import HttpConfig
from bot.core.editor import (
    EDITOR_PATH,
    KEY_FILE,
    LinkClaim,
    LinkProblem,
    RegionEditor,
    link_key,
    read_token,
    sign,
)
from bot.core.refusals import Refusal, RefusalKind
from bot.store.audit import Actor
from bot.store.editor_links import IssuedLink, LinkStore
from bot.store.jobs import Requester
from bot.store.models import AuditEntry, EditorLink
from tests.databases import Database
from tests.stores import Stores, open_stores

KEY = b"k" * 32
NOW = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)
CLAIM = LinkClaim(
    job_id="0123456789",
    image=1,
    user_id=42,
    expires_at=NOW + timedelta(minutes=10),
    nonce="ab" * 16,
)
PUBLIC = "https://atelier.example.org"
MEMBER = Requester.on_discord(
    user_id=42, user_name="member", guild_id=7, channel_id=8, role_ids=(9,)
)


def test_a_signed_link_reads_back_as_its_claim() -> None:
    assert read_token(KEY, sign(KEY, CLAIM), NOW) == CLAIM


@pytest.mark.parametrize("part", [0, 1, 2, 3, 4], ids=["job", "image", "member", "expiry", "nonce"])
def test_a_link_with_any_part_changed_is_tampered(part: int) -> None:
    parts = sign(KEY, CLAIM).split(".")
    parts[part] = "1" + parts[part][1:] if parts[part][0] != "1" else "2" + parts[part][1:]
    assert read_token(KEY, ".".join(parts), NOW) is LinkProblem.TAMPERED


def test_a_link_signed_with_another_key_is_tampered() -> None:
    assert read_token(KEY, sign(b"x" * 32, CLAIM), NOW) is LinkProblem.TAMPERED


def test_a_link_past_its_expiry_is_expired() -> None:
    token = sign(KEY, CLAIM)
    assert read_token(KEY, token, CLAIM.expires_at - timedelta(seconds=1)) == CLAIM
    assert read_token(KEY, token, CLAIM.expires_at) is LinkProblem.EXPIRED


@pytest.mark.parametrize("token", ["", "abc", "a.b.c.d.e.f", "j.1.x.5.n.s", "j.1.2.3.n.s.extra"])
def test_what_is_not_a_link_is_malformed(token: str) -> None:
    assert read_token(KEY, token, NOW) is LinkProblem.MALFORMED


def test_the_key_comes_from_the_environment_or_is_generated_once_readable_by_the_bot_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    http = HttpConfig(link_secret_env="ATELIER_TEST_LINK_SECRET")
    monkeypatch.delenv("ATELIER_TEST_LINK_SECRET", raising=False)
    generated = link_key(http, tmp_path)
    assert len(generated) == 32 and link_key(http, tmp_path) == generated
    assert stat.S_IMODE(os.stat(tmp_path / KEY_FILE).st_mode) == 0o600
    monkeypatch.setenv("ATELIER_TEST_LINK_SECRET", "a long random string from the operator")
    from_environment = link_key(http, tmp_path)
    assert from_environment != generated and link_key(http, tmp_path / "other") == from_environment


@pytest.fixture
async def stores(tmp_path: Path, database: Database) -> AsyncIterator[Stores]:
    async with open_stores(tmp_path, database=database) as opened:
        yield opened


def editor_on(stores: Stores, minutes: float = 10.0) -> RegionEditor:
    """The core's editor with only its links wired: enough to issue and check them."""
    http = HttpConfig(enabled=True, public_url=PUBLIC, editor_link_minutes=minutes)
    return RegionEditor(
        http=http,
        data_dir=stores.config.storage.data_dir,
        links=LinkStore(stores.sessions),
        door=None,  # type: ignore[arg-type]
        acting=None,  # type: ignore[arg-type]
    )


async def audit_of(stores: Stores) -> list[tuple[str, str]]:
    async with stores.sessions() as session:
        rows = await session.scalars(
            select(AuditEntry)
            .where(AuditEntry.action.like("editor.link.%"))
            .order_by(AuditEntry.id)
        )
        return [(row.action, row.outcome) for row in rows]


def token_of(link: str) -> str:
    assert link.startswith(PUBLIC + EDITOR_PATH)
    return link.removeprefix(PUBLIC + EDITOR_PATH)


async def test_a_link_is_bound_to_its_member_and_image_and_works_once(stores: Stores) -> None:
    editor = editor_on(stores)
    token = token_of(await editor.issue(MEMBER, "0123456789", 2))
    checked = await editor.check(token)
    assert isinstance(checked, IssuedLink)
    assert (checked.job_id, checked.image, checked.user_id) == ("0123456789", 2, 42)
    assert (checked.guild_id, checked.channel_id, checked.role_ids) == (7, 8, (9,))

    links = LinkStore(stores.sessions)
    # Two submissions at once: one compare-and-set wins.
    first, second = await asyncio.gather(links.use(checked), links.use(checked))
    assert sorted([first, second]) == [False, True]
    used = await editor.check(token)
    assert isinstance(used, Refusal) and used.kind is RefusalKind.GONE
    assert "used already" in used.reason
    assert await audit_of(stores) == [
        ("editor.link.issued", "ok"),
        ("editor.link.used", "ok"),
        ("editor.link.refused", "used"),
    ]


async def test_a_changed_expired_or_unknown_link_is_refused_and_audited(stores: Stores) -> None:
    editor = editor_on(stores)
    token = token_of(await editor.issue(MEMBER, "0123456789", 1))
    job, image, member, *rest = token.split(".")
    # Another member's id (or another image) in a link given to this one.
    other_member = await editor.check(".".join([job, image, "43", *rest]))
    other_image = await editor.check(".".join([job, "2", member, *rest]))
    for refused in (other_member, other_image):
        assert isinstance(refused, Refusal) and refused.kind is RefusalKind.NOT_ALLOWED
        assert "changed" in refused.reason

    # Signed with this bot's key but never given here (a database restored from before).
    key = await asyncio.to_thread(link_key, HttpConfig(), stores.config.storage.data_dir)
    claim = LinkClaim(
        job_id=job,
        image=1,
        user_id=42,
        expires_at=datetime.now(UTC) + timedelta(minutes=5),
        nonce="cd" * 16,
    )
    unknown = await editor.check(sign(key, claim))
    assert isinstance(unknown, Refusal) and unknown.kind is RefusalKind.GONE

    expired = token_of(await editor_on(stores, minutes=1 / 60).issue(MEMBER, job, 1))
    await asyncio.sleep(2.1)  # the expiry is in whole seconds
    late = await editor.check(expired)
    assert isinstance(late, Refusal) and "expired" in late.reason
    # An expired link is not used by a submission that raced its check.
    issued = await LinkStore(stores.sessions).get(expired.split(".")[4])
    assert issued is not None and not await LinkStore(stores.sessions).use(issued)

    outcomes = [outcome for action, outcome in await audit_of(stores) if action.endswith("refused")]
    assert outcomes == ["tampered", "tampered", "unknown", "expired"]
    async with stores.sessions() as session:
        audited = str([row.params for row in await session.scalars(select(AuditEntry))])
    assert rest[1] not in audited and rest[2] not in audited  # never the nonce or signature


async def test_forget_me_deletes_the_members_links_and_keeps_no_id_of_theirs_in_the_audit(
    stores: Stores,
) -> None:
    editor = editor_on(stores)
    forgotten = dataclasses.replace(MEMBER, user_id=913_377_000_123, user_name="dana")
    used = token_of(await editor.issue(forgotten, "0123456789", 1))
    unused = token_of(await editor.issue(forgotten, "0123456789", 2))
    kept = token_of(await editor.issue(MEMBER, "0123456789", 1))
    link = await editor.check(used)
    assert isinstance(link, IssuedLink) and await LinkStore(stores.sessions).use(link)
    await editor.check(used)  # refused as used: this bot's link, their id is its actor
    job, _, member, *rest = unused.split(".")
    await editor.check(".".join([job, "3", member, *rest]))  # changed: claims their id

    await stores.users.forget(forgotten.user_id, Actor(forgotten.user_id))

    async with stores.sessions() as session:
        links = (await session.scalars(select(EditorLink))).all()
        entries = (await session.scalars(select(AuditEntry))).all()
    assert [link.user_id for link in links] == [MEMBER.user_id]
    # Only the record of the request to forget them names them.
    about_links = [(e.actor_id, e.target, e.params) for e in entries if e.action != "user.forget"]
    assert str(forgotten.user_id) not in str(about_links)
    assert "dana" not in str([link.user_name for link in links])
    # Their links work no more; another member's still does.
    for token in (used, unused):
        refused = await editor.check(token)
        assert isinstance(refused, Refusal) and refused.kind is RefusalKind.GONE
    assert isinstance(await editor.check(kept), IssuedLink)
