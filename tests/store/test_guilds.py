"""Per-guild settings and the prompt blocklist."""

from __future__ import annotations

from bot.store.audit import Actor
from bot.store.guilds import GuildStore
from tests.stores import Stores

HERE = Actor(user_id=1, guild_id=10, channel_id=20)
ELSEWHERE = Actor(user_id=2, guild_id=11)


async def test_a_guild_sees_its_own_blocked_terms_and_the_global_ones(stores: Stores) -> None:
    guilds = GuildStore(stores.sessions)
    assert await guilds.block("gore", HERE)
    assert not await guilds.block("gore", HERE)
    assert await guilds.block("spam", ELSEWHERE, everywhere=True)
    assert await guilds.blocked_terms(10) == ["gore", "spam"]
    assert await guilds.blocked_terms(11) == ["spam"]
    assert await guilds.unblock("gore", HERE)
    assert not await guilds.unblock("gore", HERE)
    assert await guilds.blocked_terms(10) == ["spam"]
    page = await stores.audit.query(action="blocklist")
    assert [(e.action, e.outcome) for e in reversed(page.entries)] == [
        ("blocklist.add", "ok"),
        ("blocklist.add", "no-op"),
        ("blocklist.add", "ok"),
        ("blocklist.remove", "ok"),
        ("blocklist.remove", "no-op"),
    ]


async def test_settings_changes_merge_and_a_none_removes_a_key(stores: Stores) -> None:
    guilds = GuildStore(stores.sessions)
    assert await guilds.settings(10) == {}
    await guilds.update_settings(10, {"channels": [20, 21], "private_default": True}, HERE)
    await guilds.update_settings(10, {"private_default": None, "max_count": 2}, HERE)
    assert await guilds.settings(10) == {"channels": [20, 21], "max_count": 2}
    assert await guilds.settings(11) == {}
    page = await stores.audit.query(action="guild.settings")
    assert page.total == 2 and page.entries[0].target == "guild:10"
