"""LocalDiscord: a Discord-compatible server on 127.0.0.1 and the API tests drive it with."""

# Waits take a timeout so that a failure can say what was awaited and show the server's
# diagnostics, which a bare asyncio.timeout() around the call could not.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from .gateway import GUILD_MEMBERS, GUILD_MESSAGES, GUILDS, MESSAGE_CONTENT, Gateway
from .interactions import (
    APPLICATION_COMMAND,
    MESSAGE_COMPONENT,
    MODAL_SUBMIT,
    FileSpec,
    InteractionHandle,
    build_command_data,
    build_modal_components,
    interaction_envelope,
)
from .models import JSON, Fault, Message, RequestRecord, Upload
from .openapi import DEFAULT_SPEC_PATH, OpenApiValidator
from .rest import RestApi
from .state import ServerState
from .world import ATTACHMENT_SIZE_LIMIT, Member, World

_STRING_SELECT = 3
_BUTTON = 2
_MESSAGE_COMMAND = 3  # application command type of a message context menu


@dataclass(frozen=True)
class OtherGuild:
    """Another server the bot is in: its id, its "general" channel, its owner and a plain
    member ("tester")."""

    guild_id: int
    channel_id: int
    owner_id: int
    user_id: int


class LocalDiscord:
    """Gateway (websocket), REST API and attachment CDN of one simulated guild.

    Point discord.py at it before creating the client::

        discord.http.Route.BASE = server.api_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(server.gateway_url)

    and log in with `server.bot_token`. All state lives in memory; times are
    `time.monotonic()` values.
    """

    def __init__(
        self,
        *,
        guild_name: str = "Atelier Test Guild",
        callback_deadline: float | None = 3.0,
        token_lifetime: float = 15 * 60,
        spec_path: Path | None = DEFAULT_SPEC_PATH,
        host: str = "127.0.0.1",
        port: int = 0,
        upload_limit: int = ATTACHMENT_SIZE_LIMIT,
        other_guilds: Sequence[str] = (),
    ) -> None:
        """`callback_deadline`: seconds after which Discord forgets an unanswered interaction
        (10062); None disables it. `spec_path`: Discord's OpenAPI spec; validation is
        skipped when None or when the file is absent. `upload_limit`: the interactions'
        `attachment_size_limit`, enforced on uploads (413, code 40005). `other_guilds`:
        names of further servers the bot is in from the start (see `add_guild`)."""
        self._state = ServerState(
            guild_name=guild_name,
            callback_deadline=callback_deadline,
            token_lifetime=token_lifetime,
            upload_limit=upload_limit,
        )
        self._validator = OpenApiValidator.load(spec_path) if spec_path is not None else None
        self._gateway = Gateway(self._state, lambda: self.gateway_url)
        self._rest = RestApi(self._state, self._gateway, self._validator, lambda: self.gateway_url)
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self._runner: web.AppRunner | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.other_guilds = [self.add_guild(name) for name in other_guilds]

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        # Bots upload generated images; allow bodies up to Discord's attachment limit.
        app = web.Application(client_max_size=ATTACHMENT_SIZE_LIMIT + 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._requested_port)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        self._state.messages.base_url = self.base_url

    async def stop(self) -> None:
        """Close gateway sockets and the HTTP server. Close the bot's client first, or it
        will keep trying to reconnect."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._gateway.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/" and request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._gateway.handle(request)
        return await self._rest.handle(request)

    # -- addresses and identities ---------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("LocalDiscord is not started; await server.start() first")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def api_base(self) -> str:
        """For `discord.http.Route.BASE`."""
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        """For `DiscordWebSocket.DEFAULT_GATEWAY`; READY's resume_gateway_url is the same."""
        return f"ws://{self._host}:{self.port}/"

    @property
    def bot_token(self) -> str:
        return self._state.bot_token

    @property
    def application_id(self) -> int:
        return self._state.world.application_id

    @property
    def bot_user_id(self) -> int:
        return self._state.world.bot_user_id

    @property
    def interaction_tokens(self) -> list[str]:
        """Every interaction token handed out so far (credentials a log must never show)."""
        return list(self._state.interactions_by_token)

    @property
    def guild_id(self) -> int:
        return self._state.world.guild_id

    @property
    def channel_id(self) -> int:
        """The guild's default text channel ("general")."""
        return self._state.world.channel_id

    @property
    def owner_id(self) -> int:
        """Owns the guild and the application (all permissions)."""
        return self._state.world.owner_id

    @property
    def user_id(self) -> int:
        """A plain member ("tester"), the default author of interactions."""
        return self._state.world.user_id

    # -- diagnostics ----------------------------------------------------------------------

    @property
    def schema_errors(self) -> list[str]:
        """Request bodies that violate Discord's OpenAPI spec (empty when all were valid)."""
        return self._state.schema_errors

    @property
    def validating(self) -> bool:
        """False when the OpenAPI spec file was absent and nothing is validated."""
        return self._validator is not None

    @property
    def unhandled(self) -> list[str]:
        """Requests to unknown routes and gateway frames the server did not understand."""
        return self._state.unhandled

    @property
    def requests(self) -> list[RequestRecord]:
        return self._state.requests

    def requests_matching(self, method: str, path_regex: str) -> list[RequestRecord]:
        """Requests with this method whose API path (after /api/v10) matches `path_regex`."""
        pattern = re.compile(path_regex)
        return [
            r
            for r in self._state.requests
            if r.method == method.upper() and pattern.search(r.path) is not None
        ]

    def hits(self, method: str, path_regex: str) -> int:
        return len(self.requests_matching(method, path_regex))

    @property
    def route_counts(self) -> Counter[str]:
        """Requests per handled route, e.g. {"POST /channels/{channel}/messages": 2}."""
        return Counter(r.route for r in self._state.requests if r.route is not None)

    def inject(
        self,
        method: str,
        path_regex: str,
        status: int,
        json_body: JSON | None,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
    ) -> Fault:
        """Answer the next `times` matching requests with this response instead."""
        fault = Fault(
            method.upper(), re.compile(path_regex), status, json_body, dict(headers or {}), times
        )
        self._state.faults.append(fault)
        return fault

    def inject_rate_limit(
        self,
        method: str,
        path_regex: str,
        *,
        retry_after: float = 0.2,
        times: int = 1,
        is_global: bool = False,
    ) -> Fault:
        """A 429 shaped like Discord's; the Via header is what makes discord.py retry."""
        body = {
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": is_global,
        }
        headers = {
            "Via": "1.1 google",
            "Retry-After": str(retry_after),
            "X-RateLimit-Scope": "global" if is_global else "user",
        }
        if is_global:
            headers["X-RateLimit-Global"] = "true"
        return self.inject(method, path_regex, 429, body, headers, times)

    # -- the guild ------------------------------------------------------------------------

    @property
    def guild_ids(self) -> list[int]:
        """The main guild, then the others the bot was invited to (`add_guild`)."""
        return [world.guild_id for world in self._state.worlds]

    def add_guild(self, name: str) -> OtherGuild:
        """Invite the bot to another server, made by someone else: its owner holds every
        permission there (Manage Server included) and nowhere else. Commands are used
        there by passing its `channel_id`; connected bots get GUILD_CREATE."""
        state = self._state
        world = World(state.ids, name, application_id=state.world.application_id)
        state.other_worlds[world.guild_id] = world
        self._announce("GUILD_CREATE", world.guild_payload(all_members=False), GUILDS)
        return OtherGuild(world.guild_id, world.channel_id, world.owner_id, world.user_id)

    def set_team(self, owner_id: int, roles: Mapping[int, str]) -> None:
        """Make the application a team's: `owner_id` owns the team, `roles` maps members'
        user ids to their team role ("admin", "developer", "read_only")."""
        self._state.world.team = (owner_id, dict(roles))

    def add_role(self, name: str, permissions: int = 0, *, role_id: int | None = None) -> int:
        world = self._state.world
        role_id = world.add_role(name, permissions, role_id)
        self._announce(
            "GUILD_ROLE_CREATE",
            {"guild_id": str(world.guild_id), "role": world.role_payload(role_id)},
            GUILDS,
        )
        return role_id

    def set_role_permissions(self, role_id: int, permissions: int) -> None:
        world = self._state.world
        world.roles[role_id].permissions = permissions
        self._announce(
            "GUILD_ROLE_UPDATE",
            {"guild_id": str(world.guild_id), "role": world.role_payload(role_id)},
            GUILDS,
        )

    def add_member(
        self,
        user_id: int | None = None,
        name: str = "member",
        *,
        roles: Sequence[int] = (),
        permissions: int | None = None,
        nick: str | None = None,
    ) -> int:
        """Add a guild member; `permissions` fixes their effective permissions, otherwise
        they follow @everyone and `roles`. Returns the user id."""
        world = self._state.world
        user_id = user_id or self._state.ids.next()
        world.add_member(Member(user_id, name, list(roles), permissions, nick=nick))
        self._announce(
            "GUILD_MEMBER_ADD",
            {**world.member_payload(user_id), "guild_id": str(world.guild_id)},
            GUILD_MEMBERS,
        )
        return user_id

    def add_channel(self, name: str, *, channel_id: int | None = None, nsfw: bool = False) -> int:
        """A text channel; `nsfw` marks it age-restricted, as Discord's channel setting does."""
        world = self._state.world
        channel_id = world.add_channel(name, channel_id, nsfw)
        self._announce("CHANNEL_CREATE", world.channel_payload(channel_id), GUILDS)
        return channel_id

    def _announce(self, event: str, data: JSON, intent: int) -> None:
        """Tell connected bots about a change made by the test (in an owned task)."""
        if self._runner is None or not self._gateway.sessions:
            return
        self._spawn(self._gateway.dispatch(event, data, intent=intent))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- gateway --------------------------------------------------------------------------

    @property
    def identifies(self) -> list[JSON]:
        """IDENTIFY payloads received (token, intents, properties…)."""
        return self._gateway.identifies

    @property
    def resumes(self) -> list[JSON]:
        return self._gateway.resumes

    async def wait_for_identify(self, timeout: float = 5.0, count: int = 1) -> JSON:
        """The `count`-th IDENTIFY (a restarted bot identifies again), returned once READY
        and GUILD_CREATE have been sent."""
        return await self._state.signal.wait_until(
            lambda: (
                self._gateway.identifies[count - 1]
                if len(self._gateway.identifies) >= count
                else None
            ),
            timeout,
            "the bot to IDENTIFY on the gateway",
            self._state.diagnostics,
        )

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT; discord.py then RESUMEs (see `wait_for_resume`)."""
        await self._gateway.request_reconnect()

    async def wait_for_resume(self, count: int = 1, timeout: float = 5.0) -> JSON:
        """The `count`-th RESUME payload, once RESUMED and the missed events were sent."""
        return await self._state.signal.wait_until(
            lambda: self.resumes[count - 1] if len(self.resumes) >= count else None,
            timeout,
            f"RESUME #{count}",
            self._state.diagnostics,
        )

    # -- application commands -------------------------------------------------------------

    @property
    def commands(self) -> list[JSON]:
        """Global then guild commands, as stored by the last bulk overwrites."""
        return self._state.commands.all()

    @property
    def command_syncs(self) -> int:
        """How many bulk overwrites (PUT …/commands) the bot made."""
        return self._state.commands.syncs

    async def wait_for_commands(self, timeout: float = 5.0, *, syncs: int = 1) -> list[JSON]:
        """The synced commands once the bot has made at least `syncs` bulk overwrites."""
        commands = self._state.commands
        return await self._state.signal.wait_until(
            lambda: commands.all() if commands.syncs >= syncs else None,
            timeout,
            f"{syncs} command sync(s)",
            self._state.diagnostics,
        )

    # -- interactions ---------------------------------------------------------------------

    @property
    def interactions(self) -> list[InteractionHandle]:
        return list(self._state.interactions.values())

    def expire_interaction(self, ix: InteractionHandle) -> None:
        """Invalidate the token: callbacks get 10062, webhook calls 401 / 50027."""
        ix.expired = True

    async def send_slash_command(
        self,
        command: str,
        options: Mapping[str, object] | None = None,
        *,
        user_id: int | None = None,
        channel_id: int | None = None,
        attachments: Mapping[str, FileSpec] | None = None,
        locale: str = "en-US",
    ) -> InteractionHandle:
        """Invoke a synced slash command as a member would.

        `command` may name a subcommand path ("admin usage"). Option values are checked
        against the synced option types: str, int, bool, float, or a user/role/channel id;
        `attachments` maps attachment options to (filename, bytes, content_type).
        """
        name, *path = command.split()
        state = self._state
        channel_id = channel_id or self.channel_id
        world = state.world_of(channel_id)  # a channel of another guild: used there
        definition = state.commands.find(name, world.guild_id)
        if definition is None:
            synced = ", ".join(sorted(c["name"] for c in state.commands.all())) or "none"
            raise ValueError(f"/{name} is not synced (synced: {synced}); await wait_for_commands()")
        user_id = user_id or world.user_id
        data = build_command_data(
            definition,
            path,
            options or {},
            attachments or {},
            world=world,
            messages=state.messages,
            channel_id=channel_id,
            user_id=user_id,
        )
        return await self._send_interaction(
            APPLICATION_COMMAND, data, user_id=user_id, channel_id=channel_id, locale=locale
        )

    async def click_button(
        self, message: Message | int, custom_id: str, *, user_id: int | None = None
    ) -> InteractionHandle:
        """Click a button on the stored message's latest version (must exist, be enabled)."""
        latest, component = self._component(message, custom_id)
        if component["type"] != _BUTTON:
            raise ValueError(
                f"{custom_id!r} is a component of type {component['type']}, not a button"
            )
        return await self._send_interaction(
            MESSAGE_COMPONENT,
            {"custom_id": custom_id, "component_type": _BUTTON},
            user_id=user_id,
            channel_id=latest.channel_id,
            message=latest,
        )

    async def select_menu(
        self,
        message: Message | int,
        custom_id: str,
        values: Sequence[str],
        *,
        user_id: int | None = None,
    ) -> InteractionHandle:
        """Pick `values` in a string select menu of the stored message."""
        latest, component = self._component(message, custom_id)
        if component["type"] != _STRING_SELECT:
            raise ValueError(f"{custom_id!r} is not a string select (type {component['type']})")
        offered = [o["value"] for o in component.get("options", [])]
        if any(v not in offered for v in values):
            raise ValueError(f"values {list(values)} not all among the options {offered}")
        return await self._send_interaction(
            MESSAGE_COMPONENT,
            {"custom_id": custom_id, "component_type": _STRING_SELECT, "values": list(values)},
            user_id=user_id,
            channel_id=latest.channel_id,
            message=latest,
        )

    async def submit_modal(
        self,
        ix: InteractionHandle,
        values: Mapping[str, str | Sequence[str]],
        *,
        user_id: int | None = None,
    ) -> InteractionHandle:
        """Submit the modal the bot answered `ix` with; `values` maps input custom_ids."""
        callback = ix.callback
        if callback is None or callback.type != 9 or callback.data is None:
            raise ValueError(f"{ix!r} was not answered with a modal")
        data = {
            "custom_id": callback.data["custom_id"],
            "components": build_modal_components(callback.data, values),
        }
        message = self._state.messages.live(ix.message_id) if ix.message_id else None
        return await self._send_interaction(
            MODAL_SUBMIT,
            data,
            user_id=user_id or ix.user_id,
            channel_id=ix.channel_id,
            message=message,
        )

    def _component(self, message: Message | int, custom_id: str) -> tuple[Message, JSON]:
        message_id = message if isinstance(message, int) else message.id
        latest = self._state.messages.live(message_id)
        if latest is None:
            raise ValueError(f"message {message_id} does not exist (or was deleted)")
        component = latest.find_component(custom_id)
        if component is None:
            raise ValueError(
                f"message {message_id} has no component {custom_id!r}: {latest.custom_ids}"
            )
        if component.get("disabled"):
            raise ValueError(f"component {custom_id!r} is disabled")
        return latest, component

    async def _send_interaction(
        self,
        type: int,
        data: JSON,
        *,
        user_id: int | None,
        channel_id: int,
        message: Message | None = None,
        locale: str = "en-US",
    ) -> InteractionHandle:
        state = self._state
        if not self._gateway.sessions:
            raise RuntimeError("no bot is connected; await server.wait_for_identify() first")
        # Changes the test made (new members, roles…) reach the bot before the interaction.
        if self._background:
            await asyncio.gather(*self._background)
        user_id = user_id or state.world.user_id
        interaction_id = state.ids.next()
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(96)
        payload = interaction_envelope(
            state.world_of(channel_id),
            interaction_id=interaction_id,
            token=token,
            type=type,
            data=data,
            user_id=user_id,
            channel_id=channel_id,
            locale=locale,
            message=message.payload if message is not None else None,
            upload_limit=state.upload_limit,
        )
        handle = InteractionHandle(
            interaction_id=interaction_id,
            token=token,
            type=type,
            payload=payload,
            user_id=user_id,
            channel_id=channel_id,
            message_id=message.id if message is not None else None,
            sent_at=time.monotonic(),
            messages=state.messages,
            signal=state.signal,
            diagnostics=state.diagnostics,
        )
        # Registered before sending: the bot may answer before dispatch() returns.
        state.interactions[interaction_id] = handle
        state.interactions_by_token[token] = handle
        await self._gateway.dispatch("INTERACTION_CREATE", payload)
        return handle

    async def send_message_command(
        self, name: str, message: Message | int, *, user_id: int | None = None
    ) -> InteractionHandle:
        """Use a synced message context-menu command ("Apps" on a message) on `message`."""
        state = self._state
        definition = state.commands.find(name, state.world.guild_id, kind=_MESSAGE_COMMAND)
        if definition is None:
            raise ValueError(f"message command {name!r} is not synced")
        target = state.messages.live(message if isinstance(message, int) else message.id)
        if target is None:
            raise ValueError(f"message {message!r} does not exist (or was deleted)")
        data: JSON = {
            "id": definition["id"],
            "name": name,
            "type": _MESSAGE_COMMAND,
            "target_id": str(target.id),
            "resolved": {"messages": {str(target.id): target.payload}},
            "guild_id": str(state.world.guild_id),
        }
        return await self._send_interaction(
            APPLICATION_COMMAND, data, user_id=user_id, channel_id=target.channel_id
        )

    # -- messages -------------------------------------------------------------------------

    async def send_member_message(
        self,
        content: str = "",
        *,
        user_id: int | None = None,
        channel_id: int | None = None,
        attachments: Sequence[FileSpec] = (),
        reply_to: Message | int | None = None,
        ping_reply: bool = True,
    ) -> Message:
        """A member posts a message (optionally a reply, with files); connected bots with
        the GUILD_MESSAGES intent get MESSAGE_CREATE. As on Discord, a bot without the
        Message Content intent sees the content and attachments only of messages that
        mention it (a reply with its ping on mentions the replied-to author)."""
        state, world = self._state, self._state.world
        if not self._gateway.sessions:
            raise RuntimeError("no bot is connected; await server.wait_for_identify() first")
        if self._background:
            await asyncio.gather(*self._background)
        user_id = user_id or world.user_id
        channel_id = channel_id or self.channel_id
        mentioned = [int(m) for m in re.findall(r"<@!?(\d+)>", content) if int(m) in world.members]
        extra: JSON = {}
        if reply_to is not None:
            referenced = state.messages.live(reply_to if isinstance(reply_to, int) else reply_to.id)
            if referenced is None:
                raise ValueError(f"message {reply_to!r} does not exist (or was deleted)")
            extra["message_reference"] = {
                "type": 0,
                "message_id": str(referenced.id),
                "channel_id": str(referenced.channel_id),
                "guild_id": str(world.guild_id),
            }
            extra["referenced_message"] = referenced.payload
            if ping_reply and referenced.author_id not in mentioned:
                mentioned.append(referenced.author_id)
        extra["mentions"] = [world.user_payload(m) for m in dict.fromkeys(mentioned)]
        uploads = [
            Upload(index, filename, content_type, data)
            for index, (filename, data, content_type) in enumerate(attachments)
        ]
        message = state.messages.create(
            channel_id,
            {"content": content},
            uploads,
            author_id=user_id,
            message_type=19 if reply_to is not None else 0,
            extra=extra,
        )
        state.signal.notify()
        data: JSON = {
            **message.payload,
            "guild_id": str(world.guild_id),
            "member": world.member_payload(user_id, with_user=False),
        }
        for session in list(self._gateway.sessions.values()):
            if not session.intents & GUILD_MESSAGES:
                continue
            seen = dict(data)
            if not session.intents & MESSAGE_CONTENT and world.bot_user_id not in mentioned:
                seen.update(content="", attachments=[], embeds=[], components=[])
            await session.dispatch("MESSAGE_CREATE", seen)
        return message

    def dm_messages(self, user_id: int) -> list[Message]:
        """Messages the bot sent a member by DM, oldest first."""
        world = self._state.world
        channels = [c for c, recipient in world.dm_channels.items() if recipient == user_id]
        return [m for c in channels for m in self._state.messages.channel_messages(c)]

    def channel_messages(self, channel_id: int | None = None) -> list[Message]:
        """Visible messages (latest versions, oldest first); ephemeral ones are excluded."""
        return self._state.messages.channel_messages(channel_id or self.channel_id)

    def message(self, message_id: int) -> Message | None:
        """Latest version of any stored message (ephemeral and deleted ones included)."""
        return self._state.messages.latest(message_id)

    def message_versions(self, message_id: int) -> list[Message]:
        return self._state.messages.versions(message_id)

    async def wait_for_channel_message(
        self,
        predicate: Callable[[Message], bool] | None = None,
        *,
        channel_id: int | None = None,
        timeout: float = 5.0,
    ) -> Message:
        """The first visible message of the channel (default: general) matching `predicate`."""
        check = predicate or (lambda m: True)
        return await self._state.signal.wait_until(
            lambda: next((m for m in self.channel_messages(channel_id) if check(m)), None),
            timeout,
            "a channel message matching the predicate",
            self._state.diagnostics,
        )
