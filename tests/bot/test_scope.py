"""Where the bot serves: `[discord] allowed_guild_ids` and `allowed_channel_ids`."""

from __future__ import annotations

from bot.config import DiscordConfig
from bot.discord.cogs.scope import out_of_scope

HOME, ELSEWHERE = 10, 11
STUDIO, LOBBY, THREAD = 20, 21, 22
LIMITED = DiscordConfig(allowed_guild_ids=[HOME], allowed_channel_ids=[STUDIO])


def test_no_lists_serve_everywhere() -> None:
    assert out_of_scope(DiscordConfig(), "imagine", None, (None,)) is None
    assert out_of_scope(DiscordConfig(), "imagine", ELSEWHERE, (LOBBY, None)) is None


def test_other_servers_and_direct_messages_are_refused_politely() -> None:
    elsewhere = out_of_scope(LIMITED, "imagine", ELSEWHERE, (STUDIO, None))
    assert elsewhere == "I am not set up to work in this server, sorry."
    assert "direct messages" in (out_of_scope(LIMITED, "me", None, (5, None)) or "")
    assert out_of_scope(LIMITED, "admin", ELSEWHERE, (STUDIO, None)) is not None


def test_only_the_allowed_channels_and_their_threads_but_admin_anywhere_at_home() -> None:
    assert out_of_scope(LIMITED, "imagine", HOME, (STUDIO, None)) is None
    assert out_of_scope(LIMITED, "imagine", HOME, (THREAD, STUDIO)) is None
    lobby = out_of_scope(LIMITED, "imagine", HOME, (LOBBY, None))
    assert lobby == f"I only work in <#{STUDIO}>; please ask me there."
    assert out_of_scope(LIMITED, "admin", HOME, (LOBBY, None)) is None


def test_forget_me_works_everywhere() -> None:
    assert out_of_scope(LIMITED, "forget-me", ELSEWHERE, (LOBBY, None)) is None
    assert out_of_scope(LIMITED, "forget-me", None, (5, None)) is None
