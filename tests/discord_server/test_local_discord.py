"""The local Discord server speaks well enough for the real discord.py client."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import discord
import pytest
import yarl
from discord import app_commands

from tests.discord_server import LocalDiscord
from tests.discord_server.openapi import OpenApiValidator


def _png(width: int = 2, height: int = 1) -> bytes:
    """A tiny valid RGB PNG, built by hand so the test needs no imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PNG = _png()


class PingView(discord.ui.View):
    """Persistent (timeout=None, fixed custom_id), so clicks reach it by custom_id alone."""

    def __init__(self, bot: StudioBot) -> None:
        super().__init__(timeout=None)
        self.bot = bot

    @discord.ui.button(label="Again", custom_id="ping:again", style=discord.ButtonStyle.primary)
    async def again(self, interaction: discord.Interaction, button: discord.ui.Button[Any]) -> None:
        self.bot.clicks.append(interaction.user.id)
        await interaction.response.send_message("clicked", ephemeral=True)


class DescribeModal(discord.ui.Modal, title="Describe"):
    prompt: discord.ui.TextInput[Any] = discord.ui.TextInput(label="Prompt", custom_id="m:prompt")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"got {self.prompt.value}")


class StudioBot(discord.Client):
    def __init__(self, guild_id: int) -> None:
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self)
        self.guild = discord.Object(guild_id)
        self.clicks: list[int] = []
        self.tree_errors: list[BaseException] = []
        self.release_slow = asyncio.Event()
        self.slow_outcome: asyncio.Future[BaseException | None] = asyncio.Future()
        self.usage_seen: asyncio.Future[tuple[Any, ...]] = asyncio.Future()
        self.messages: asyncio.Queue[discord.Message] = asyncio.Queue()
        self._register()

    async def on_message(self, message: discord.Message) -> None:
        self.messages.put_nowait(message)

    def _register(self) -> None:
        tree, guild = self.tree, self.guild

        @tree.command(guild=guild, description="Answer with an image")
        async def ping(interaction: discord.Interaction, note: str | None = None) -> None:
            await interaction.response.defer(thinking=True)
            await interaction.edit_original_response(
                content="pong",
                embed=discord.Embed(title="Pong", description=note),
                attachments=[discord.File(io.BytesIO(PNG), "pong.png")],
                view=PingView(self),
            )

        @tree.command(guild=guild, description="Answer late")
        async def slow(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            await self.release_slow.wait()
            try:
                await interaction.edit_original_response(content="late")
            except discord.HTTPException as exc:
                self.slow_outcome.set_result(exc)
            else:
                self.slow_outcome.set_result(None)

        @tree.command(guild=guild, description="Ask for details")
        async def describe(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(DescribeModal())

        @tree.command(guild=guild, description="Post to the channel")
        async def post(interaction: discord.Interaction) -> None:
            await interaction.response.defer(ephemeral=True)
            assert isinstance(interaction.channel, discord.TextChannel)
            posted = await interaction.channel.send(
                "posted", file=discord.File(io.BytesIO(PNG), "out.png")
            )
            await posted.edit(content="posted!")
            await interaction.followup.send("done", ephemeral=True)
            await interaction.followup.send("second")

        admin = app_commands.Group(name="admin", description="Admin tools")
        stats = app_commands.Group(name="stats", description="Stats", parent=admin)

        @stats.command(description="Usage of a member")
        async def usage(
            interaction: discord.Interaction,
            member: discord.Member,
            count: int,
            ratio: float,
            loud: bool,
            image: discord.Attachment,
        ) -> None:
            data = await image.read()
            self.usage_seen.set_result((member.id, count, ratio, loud, data, image.content_type))
            await interaction.response.send_message("ok")

        tree.add_command(admin, guild=guild)

        @tree.error
        async def on_error(
            interaction: discord.Interaction, error: app_commands.AppCommandError
        ) -> None:
            self.tree_errors.append(error)

    async def setup_hook(self) -> None:
        self.add_view(PingView(self))
        await self.tree.sync(guild=self.guild)


@pytest.fixture
async def server() -> AsyncIterator[LocalDiscord]:
    async with LocalDiscord() as local:
        yield local


@pytest.fixture
async def bot(server: LocalDiscord, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StudioBot]:
    monkeypatch.setattr(discord.http.Route, "BASE", server.api_base)
    monkeypatch.setattr(
        discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(server.gateway_url)
    )
    client = StudioBot(server.guild_id)
    await client.login(server.bot_token)
    running = asyncio.create_task(client.connect())
    try:
        await server.wait_for_identify()
        async with asyncio.timeout(5):
            await client.wait_until_ready()
        yield client
    finally:
        await client.close()
        async with asyncio.timeout(5):
            await running
    assert client.tree_errors == []


def assert_clean(server: LocalDiscord) -> None:
    assert server.validating
    assert server.schema_errors == []
    assert server.unhandled == []


async def test_bot_syncs_its_guild_commands(server: LocalDiscord, bot: StudioBot) -> None:
    commands = await server.wait_for_commands()

    assert {c["name"] for c in commands} == {"ping", "slow", "describe", "post", "admin"}
    assert all(c["guild_id"] == str(server.guild_id) for c in commands)
    assert server.identifies[0]["intents"] == discord.Intents.default().value
    assert_clean(server)


async def test_deferred_reply_is_edited_with_file_embed_and_button(
    server: LocalDiscord, bot: StudioBot
) -> None:
    await server.wait_for_commands()

    ix = await server.send_slash_command("ping", {"note": "hi"})
    callback = await ix.wait_for_callback()
    original = await ix.wait_for_original(lambda m: bool(m.attachments))

    assert callback.type == 5
    assert callback.received_at - ix.sent_at < 3
    assert ix.edits[0].loading
    assert original.content == "pong"
    assert original.embeds[0]["title"] == "Pong"
    assert original.embeds[0]["description"] == "hi"
    assert original.custom_ids == ["ping:again"]
    [attachment] = original.attachments
    assert (attachment.filename, attachment.content_type, attachment.data) == (
        "pong.png",
        "image/png",
        PNG,
    )
    async with aiohttp.ClientSession() as http, http.get(attachment.url) as response:
        assert await response.read() == PNG
    assert server.channel_messages()[-1].id == original.id
    assert_clean(server)


async def test_button_click_reaches_the_persistent_view(
    server: LocalDiscord, bot: StudioBot
) -> None:
    await server.wait_for_commands()
    ix = await server.send_slash_command("ping")
    original = await ix.wait_for_original(lambda m: bool(m.components))

    click = await server.click_button(original, "ping:again")
    callback = await click.wait_for_callback()

    assert bot.clicks == [server.user_id]
    assert callback.type == 4
    assert callback.data is not None and callback.data["content"] == "clicked"
    assert click.original is not None and click.original.ephemeral
    assert_clean(server)


async def test_rate_limited_edit_is_retried_once_after_retry_after(
    server: LocalDiscord, bot: StudioBot
) -> None:
    await server.wait_for_commands()
    fault = server.inject(
        "PATCH",
        r"/messages/@original$",
        429,
        {"message": "You are being rate limited.", "retry_after": 0.2, "global": False},
        headers={"Via": "1.1 google", "Retry-After": "0.2", "X-RateLimit-Scope": "user"},
    )

    ix = await server.send_slash_command("ping")
    await ix.wait_for_original(lambda m: bool(m.attachments))

    patches = server.requests_matching("PATCH", r"/messages/@original$")
    assert [p.status for p in patches] == [429, 200]
    assert patches[1].received_at - patches[0].received_at >= 0.2
    assert fault.triggered == 1
    assert_clean(server)


async def test_expired_token_gives_the_bot_invalid_webhook_token(
    server: LocalDiscord, bot: StudioBot
) -> None:
    await server.wait_for_commands()
    ix = await server.send_slash_command("slow")
    await ix.wait_for_callback()

    server.expire_interaction(ix)
    bot.release_slow.set()
    outcome = await asyncio.wait_for(bot.slow_outcome, 5)

    assert isinstance(outcome, discord.HTTPException)
    assert (outcome.status, outcome.code) == (401, 50027)
    assert_clean(server)


async def test_subcommand_options_arrive_typed_and_attachment_downloads(
    server: LocalDiscord, bot: StudioBot
) -> None:
    await server.wait_for_commands()

    ix = await server.send_slash_command(
        "admin stats usage",
        {"member": server.owner_id, "count": 3, "ratio": 0.5, "loud": True},
        attachments={"image": ("cat.png", PNG, "image/png")},
    )
    seen = await asyncio.wait_for(bot.usage_seen, 5)
    callback = await ix.wait_for_callback()

    assert seen == (server.owner_id, 3, 0.5, True, PNG, "image/png")
    assert callback.type == 4
    assert server.hits("GET", r"^/attachments/") == 1
    assert_clean(server)


async def test_channel_posts_edits_and_followups_are_stored(
    server: LocalDiscord, bot: StudioBot
) -> None:
    await server.wait_for_commands()

    ix = await server.send_slash_command("post")
    posted = await server.wait_for_channel_message(lambda m: m.content == "posted!")
    second = await ix.wait_for_followup(lambda m: m.content == "second")

    assert [a.data for a in posted.attachments] == [PNG]
    assert [v.content for v in server.message_versions(posted.id)] == ["posted", "posted!"]
    assert ix.original is not None and (ix.original.content, ix.original.ephemeral) == (
        "done",
        True,
    )
    assert [m.content for m in ix.followups] == ["done", "second"]
    assert not second.ephemeral
    assert server.route_counts["POST /channels/{channel}/messages"] == 1
    assert_clean(server)


async def test_modal_is_shown_and_its_submission_answered(
    server: LocalDiscord, bot: StudioBot
) -> None:
    await server.wait_for_commands()
    ix = await server.send_slash_command("describe")
    assert (await ix.wait_for_callback()).type == 9

    submitted = await server.submit_modal(ix, {"m:prompt": "a cat"})
    reply = await submitted.wait_for_original()

    assert reply.content == "got a cat"
    assert_clean(server)


async def test_reconnect_resumes_the_session(server: LocalDiscord, bot: StudioBot) -> None:
    await server.wait_for_commands()

    await server.request_reconnect()
    resumed = await server.wait_for_resume()
    ix = await server.send_slash_command("ping")

    assert resumed["session_id"] == bot.ws.session_id
    assert (await ix.wait_for_original()).content == "pong"
    assert len(server.identifies) == 1
    assert_clean(server)


async def test_member_added_with_a_role_invokes_with_its_permissions(
    server: LocalDiscord, bot: StudioBot
) -> None:
    await server.wait_for_commands()
    administrator = 1 << 3
    role = server.add_role("curator", permissions=administrator)
    user = server.add_member(name="ada", roles=[role])

    ix = await server.send_slash_command("ping", user_id=user)
    await ix.wait_for_original()

    assert ix.payload["member"]["roles"] == [str(role)]
    assert int(ix.payload["member"]["permissions"]) & administrator
    guild = bot.get_guild(server.guild_id)
    assert guild is not None and guild.get_role(role) is not None  # GUILD_ROLE_CREATE arrived
    assert_clean(server)


async def test_invalid_options_are_rejected_before_sending(
    server: LocalDiscord, bot: StudioBot
) -> None:
    await server.wait_for_commands()

    with pytest.raises(ValueError, match="no option 'nope'"):
        await server.send_slash_command("ping", {"nope": 1})
    with pytest.raises(TypeError, match="'note'"):
        await server.send_slash_command("ping", {"note": 5})
    with pytest.raises(ValueError, match="needs a subcommand"):
        await server.send_slash_command("admin")
    with pytest.raises(ValueError, match="not synced"):
        await server.send_slash_command("imagine")


# -- protocol details, without discord.py ------------------------------------------------


async def _raw_identify(
    server: LocalDiscord, http: aiohttp.ClientSession
) -> tuple[aiohttp.ClientWebSocketResponse, list[dict[str, Any]]]:
    ws = await http.ws_connect(server.gateway_url + "?v=10&encoding=json&compress=zlib-stream")
    hello = await ws.receive_json()
    await ws.send_json({"op": 2, "d": {"token": server.bot_token, "intents": 1, "properties": {}}})
    events = [await ws.receive_json(), await ws.receive_json()]
    await ws.send_json({"op": 1, "d": 2})
    assert (await ws.receive_json())["op"] == 11
    assert hello["op"] == 10
    return ws, events


async def test_gateway_handshake_sends_ready_then_guild(server: LocalDiscord) -> None:
    async with aiohttp.ClientSession() as http:
        ws, events = await _raw_identify(server, http)
        await ws.close()

    ready, guild = events
    assert (ready["t"], ready["s"], guild["t"], guild["s"]) == ("READY", 1, "GUILD_CREATE", 2)
    assert ready["d"]["resume_gateway_url"] == server.gateway_url
    assert ready["d"]["application"]["id"] == str(server.application_id)
    assert [c["name"] for c in guild["d"]["channels"]] == ["general"]
    assert all("flags" in m for m in guild["d"]["members"])


async def test_rest_errors_look_like_discords(server: LocalDiscord) -> None:
    api = server.api_base
    auth = {"Authorization": f"Bot {server.bot_token}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{api}/users/@me") as response:
            assert response.status == 401
            assert response.headers["Content-Type"] == "application/json"
        async with http.get(f"{api}/nowhere", headers=auth) as response:
            assert (response.status, (await response.json())["code"]) == (404, 0)
        long = {"content": "x" * 4001}
        async with http.post(
            f"{api}/channels/{server.channel_id}/messages", json=long, headers=auth
        ) as response:
            assert (response.status, (await response.json())["code"]) == (400, 50035)

    assert server.unhandled == ["GET /api/v10/nowhere"]
    assert any("$.content" in e and "too long" in e for e in server.schema_errors)


async def test_second_and_late_callbacks_are_refused() -> None:
    async with LocalDiscord(callback_deadline=0.2) as server, aiohttp.ClientSession() as http:
        ws, _ = await _raw_identify(server, http)
        auth = {"Authorization": f"Bot {server.bot_token}"}
        command = [{"name": "ping", "description": "Ping", "type": 1}]
        put = f"{server.api_base}/applications/{server.application_id}/commands"
        async with http.put(put, json=command, headers=auth) as response:
            assert response.status == 200

        async def answer(ix_id: int, token: str) -> tuple[int, Any]:
            url = f"{server.api_base}/interactions/{ix_id}/{token}/callback?with_response=1"
            async with http.post(url, json={"type": 4, "data": {"content": "hi"}}) as response:
                return response.status, await response.json()

        first = await server.send_slash_command("ping")
        status, body = await answer(first.id, first.token)
        assert status == 200
        assert body["resource"]["message"]["content"] == "hi"
        assert (await answer(first.id, first.token))[1]["code"] == 40060

        expired = await server.send_slash_command("ping")
        server.expire_interaction(expired)
        assert (await answer(expired.id, expired.token))[1]["code"] == 10062
        edit = (
            f"{server.api_base}/webhooks/{server.application_id}/{expired.token}/messages/@original"
        )
        async with http.patch(edit, json={"content": "late"}) as response:
            assert (response.status, (await response.json())["code"]) == (401, 50027)

        late = await server.send_slash_command("ping")
        await asyncio.sleep(0.25)
        assert (await answer(late.id, late.token))[1]["code"] == 10062
        await ws.close()
    assert server.schema_errors == []


async def test_spec_absence_disables_validation() -> None:
    assert OpenApiValidator.load(Path("/nonexistent/discord-openapi.json")) is None
    async with LocalDiscord(spec_path=Path("/nonexistent/discord-openapi.json")) as local:
        assert not local.validating
        assert local.schema_errors == []


async def test_member_messages_show_their_content_only_when_they_mention_the_bot(
    server: LocalDiscord, bot: StudioBot
) -> None:
    seen = bot.messages
    await server.send_member_message("hello all", attachments=[("a.png", PNG, "image/png")])
    hidden = await asyncio.wait_for(seen.get(), 5)
    assert (hidden.content, hidden.attachments) == ("", [])

    mention = await server.send_member_message(
        f"<@{server.bot_user_id}> draw", attachments=[("a.png", PNG, "image/png")]
    )
    shown = await asyncio.wait_for(seen.get(), 5)
    assert shown.content == f"<@{server.bot_user_id}> draw"
    assert [a.filename for a in shown.attachments] == ["a.png"]
    assert await shown.attachments[0].read() == PNG

    # A reply to the bot's own message mentions it (the ping is on), so it is shown too.
    assert bot.user is not None
    channel = bot.get_channel(server.channel_id)
    assert isinstance(channel, discord.TextChannel)
    mine = await channel.send("a result")
    await asyncio.wait_for(seen.get(), 5)  # the bot's own message comes back too
    reply = await server.send_member_message("again", reply_to=mine.id)
    answer = await asyncio.wait_for(seen.get(), 5)
    assert answer.content == "again" and answer.reference is not None
    assert answer.reference.message_id == mine.id
    assert isinstance(answer.reference.resolved, discord.Message)
    assert answer.reference.resolved.author.id == bot.user.id
    sent = await shown.reply("hi", mention_author=True)
    assert sent.reference is not None and sent.reference.message_id == mention.id
    assert reply.id != sent.id
    assert_clean(server)


async def test_direct_messages_open_a_dm_channel(server: LocalDiscord, bot: StudioBot) -> None:
    user = await bot.fetch_user(server.user_id)
    await user.send("just for you", file=discord.File(io.BytesIO(PNG), "dm.png"))
    (message,) = server.dm_messages(server.user_id)
    assert message.content == "just for you"
    assert [a.filename for a in message.attachments] == ["dm.png"]
    assert server.channel_messages() == []
    assert_clean(server)
