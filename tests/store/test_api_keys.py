"""HTTP API keys: made, listed, checked against their scrypt hash, revoked, forgotten."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot.store.api_keys import (
    MAX_ACTIVE_KEYS,
    ApiKeyStore,
    TooManyKeys,
    hash_secret,
    secret_matches,
    split_key,
)
from bot.store.audit import Actor
from bot.store.jobs import Requester
from bot.store.models import ApiKey, AuditEntry, Job
from tests.stores import Stores

DANA = Actor(user_id=444, guild_id=10)


def test_a_secret_is_stored_as_a_salted_scrypt_hash() -> None:
    stored = hash_secret("s3cret")
    assert stored.startswith("scrypt$16384$8$1$") and "s3cret" not in stored
    assert stored != hash_secret("s3cret")  # a salt of its own each time
    assert secret_matches("s3cret", stored)
    assert not secret_matches("s3cret!", stored)
    assert not secret_matches("s3cret", "bcrypt$whatever")


def test_only_keys_of_our_shape_are_looked_up() -> None:
    assert split_key("atl_0a1b2c_se_cr-et") == ("0a1b2c", "se_cr-et")
    assert split_key(" atl_0a1b2c_secret ") == ("0a1b2c", "secret")
    for wrong in ("", "sk-1234", "atl_", "atl_abc", "atl__secret", "xyz_abc_secret"):
        assert split_key(wrong) is None, wrong


async def test_a_key_acts_as_its_member_with_the_roles_and_server_it_was_made_in(
    stores: Stores,
) -> None:
    keys = ApiKeyStore(stores.sessions)
    made = await keys.create(DANA.user_id, "dana", "  my   laptop ", 10, [7, 8], DANA)
    assert made.name == "my laptop" and made.secret.startswith("atl_")
    holder = await keys.authenticate(made.secret)
    assert holder is not None
    assert (holder.user_id, holder.user_name, holder.guild_id, holder.role_ids) == (
        DANA.user_id,
        "dana",
        10,
        (7, 8),
    )
    assert holder.ban_reason is None
    assert await keys.authenticate(made.secret + "x") is None
    assert await keys.authenticate(made.secret.replace("atl_", "atl_ff")) is None
    (row,) = await keys.keys_of(DANA.user_id)
    assert row.last_used_at is not None and made.secret not in row.key_hash

    await stores.users.ban(DANA.user_id, "spam", Actor(1))
    banned = await keys.authenticate(made.secret)
    assert banned is not None and banned.ban_reason == "spam"


async def test_a_revoked_key_is_refused_even_after_it_was_checked_once(stores: Stores) -> None:
    keys = ApiKeyStore(stores.sessions)
    made = await keys.create(DANA.user_id, "dana", "ci", None, [], DANA)
    assert await keys.authenticate(made.secret) is not None  # now remembered as checked
    assert not await keys.revoke(made.key_id, user_id=999, actor=Actor(999))  # not theirs
    assert await keys.revoke(made.key_id, DANA.user_id, DANA)
    assert await keys.authenticate(made.secret) is None
    assert not await keys.revoke(made.key_id, DANA.user_id, DANA)  # already revoked
    outcomes = [(e.action, e.outcome) for e in (await stores.audit.query(action="apikey")).entries]
    assert outcomes == [
        ("apikey.revoke", "no-op"),
        ("apikey.revoke", "ok"),
        ("apikey.revoke", "no-op"),
        ("apikey.create", "ok"),
    ]
    assert all(made.secret not in str(e.params) for e in (await stores.audit.query()).entries)


async def test_a_member_holds_a_bounded_number_of_active_keys(stores: Stores) -> None:
    keys = ApiKeyStore(stores.sessions)
    made = [
        await keys.create(DANA.user_id, "dana", f"k{n}", None, [], DANA)
        for n in range(MAX_ACTIVE_KEYS)
    ]
    with pytest.raises(TooManyKeys):
        await keys.create(DANA.user_id, "dana", "one more", None, [], DANA)
    await keys.revoke(made[0].key_id, DANA.user_id, DANA)
    await keys.create(DANA.user_id, "dana", "one more", None, [], DANA)
    refused = await stores.count(AuditEntry, AuditEntry.outcome == "refused")
    assert refused == 1


async def test_forget_me_deletes_the_members_keys(stores: Stores) -> None:
    keys = ApiKeyStore(stores.sessions)
    made = await keys.create(DANA.user_id, "dana", "ci", None, [], DANA)
    requester = replace(
        Requester(user_id=DANA.user_id, user_name="dana"), client="http", api_key_id=made.key_id
    )
    await stores.run_job("viahttp", requester, 1.0)
    await stores.users.forget(DANA.user_id, DANA)
    assert await stores.count(ApiKey) == 0
    assert await keys.authenticate(made.secret) is None
    async with stores.sessions() as session:
        job = await session.get(Job, "viahttp")
        assert job is not None and job.api_key_id is None and job.client == "http"
