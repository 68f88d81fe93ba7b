"""Discord's REST API: the part an interactions bot built on discord.py uses.

Every request is recorded, validated against the OpenAPI spec, offered to the injected
faults, and only then routed. Webhook and interaction-callback routes authenticate by the
interaction token in the path; every other API route needs "Authorization: Bot <token>".
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web

from .gateway import GUILD_MESSAGES, Gateway
from .interactions import APPLICATION_COMMAND, MODAL_SUBMIT, InteractionHandle
from .messages import MessageError
from .models import (
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    JSON,
    CallbackRecord,
    Message,
    RequestRecord,
    Upload,
)
from .openapi import OpenApiValidator
from .state import ServerState
from .world import ATTACH_FILES, SEND_MESSAGES, VIEW_CHANNEL

_API_PATH = re.compile(r"^/api/v\d+(?P<rest>/.*)$")
_FILE_FIELD = re.compile(r"^files\[(\d+)\]$")

# Interaction callback types.
CHANNEL_MESSAGE = 4
DEFERRED_CHANNEL_MESSAGE = 5
DEFERRED_UPDATE_MESSAGE = 6
UPDATE_MESSAGE = 7
AUTOCOMPLETE_RESULT = 8
MODAL = 9
AUTOCOMPLETE = 4  # interaction type


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    # Exactly "application/json": discord.py compares the header verbatim, so aiohttp's
    # json_response (which appends "; charset=utf-8") would make it treat JSON as text.
    return web.Response(
        status=status,
        body=json.dumps(data).encode(),
        headers={**(headers or {}), "Content-Type": "application/json"},
    )


def error(status: int, code: int, message: str) -> web.Response:
    return json_response({"message": message, "code": code}, status)


def no_content() -> web.Response:
    return web.Response(status=204)


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true")


class _BadBody(ValueError):
    """A body Discord could not parse (malformed JSON, unknown multipart field)."""


class _Reject(Exception):
    """Raised by handlers to answer with a Discord error."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.response = error(status, code, message)


@dataclass
class ApiRequest:
    method: str
    path: str
    params: dict[str, str]
    query: Mapping[str, str]
    body: Any
    uploads: tuple[Upload, ...]

    def snowflake(self, name: str) -> int:
        try:
            return int(self.params[name])
        except ValueError:
            raise _Reject(404, 0, f"404: Not Found ({name} is not a snowflake)") from None

    def json_object(self) -> JSON:
        if not isinstance(self.body, dict):
            raise _Reject(400, 50035, "Invalid Form Body: expected a JSON object")
        return self.body


Handler = Callable[[ApiRequest], Awaitable[web.Response]]


@dataclass(frozen=True)
class _Route:
    method: str
    template: str
    pattern: re.Pattern[str]
    handler: Handler
    bot_auth: bool


class RestApi:
    def __init__(
        self,
        state: ServerState,
        gateway: Gateway,
        validator: OpenApiValidator | None,
        gateway_url: Callable[[], str],
    ) -> None:
        self._state = state
        self._gateway = gateway
        self._validator = validator
        self._gateway_url = gateway_url
        self._routes: list[_Route] = []
        add = self._add
        add("GET", "/gateway", self._get_gateway, bot_auth=False)
        add("GET", "/gateway/bot", self._get_gateway_bot)
        add("GET", "/users/@me", self._get_me)
        add("POST", "/users/@me/channels", self._open_dm)
        add("GET", "/users/{user}", self._get_user)
        add("GET", "/oauth2/applications/@me", self._get_application)
        add("GET", "/applications/@me", self._get_application)
        add("GET", "/applications/{app}/commands", self._get_commands)
        add("PUT", "/applications/{app}/commands", self._put_commands)
        add("GET", "/applications/{app}/guilds/{guild}/commands", self._get_commands)
        add("PUT", "/applications/{app}/guilds/{guild}/commands", self._put_commands)
        add("POST", "/interactions/{interaction}/{token}/callback", self._callback, bot_auth=False)
        add("POST", "/webhooks/{app}/{token}", self._post_followup, bot_auth=False)
        add("GET", "/webhooks/{app}/{token}/messages/{message}", self._get_wh, bot_auth=False)
        add("PATCH", "/webhooks/{app}/{token}/messages/{message}", self._patch_wh, bot_auth=False)
        add("DELETE", "/webhooks/{app}/{token}/messages/{message}", self._delete_wh, bot_auth=False)
        add("GET", "/channels/{channel}", self._get_channel)
        add("GET", "/channels/{channel}/messages", self._get_channel_messages)
        add("POST", "/channels/{channel}/messages", self._post_message)
        add("GET", "/channels/{channel}/messages/{message}", self._get_message)
        add("PATCH", "/channels/{channel}/messages/{message}", self._patch_message)
        add("DELETE", "/channels/{channel}/messages/{message}", self._delete_message)
        add("POST", "/channels/{channel}/typing", self._typing)
        add("GET", "/guilds/{guild}", self._get_guild)
        add("GET", "/guilds/{guild}/channels", self._get_guild_channels)
        add("GET", "/guilds/{guild}/roles", self._get_guild_roles)
        add("GET", "/guilds/{guild}/members/{user}", self._get_member)

    def _add(self, method: str, template: str, handler: Handler, *, bot_auth: bool = True) -> None:
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
        self._routes.append(_Route(method, template, re.compile(f"^{regex}$"), handler, bot_auth))

    # -- entry point ----------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        state = self._state
        api = _API_PATH.match(request.path)
        path = api["rest"] if api else request.path
        record = RequestRecord(
            request.method, path, dict(request.query), None, (), time.monotonic()
        )
        state.requests.append(record)
        try:
            record.body, record.uploads = await _read_body(request)
        except _BadBody as exc:
            state.schema_errors.append(f"{request.method} {path}: {exc}")
            response = error(400, 50109, "The request body contains invalid JSON.")
        else:
            if sum(len(upload.data) for upload in record.uploads) > state.upload_limit:
                response = error(413, 40005, "Request entity too large")
                record.status = response.status
                state.signal.notify()
                return response
            response = await self._respond(request, record, is_api=api is not None)
        finally:
            state.signal.notify()
        record.status = response.status
        return response

    async def _respond(
        self, request: web.Request, record: RequestRecord, *, is_api: bool
    ) -> web.Response:
        state = self._state
        method, path = record.method, record.path
        if is_api and self._validator is not None:
            multipart = request.content_type.startswith("multipart/")
            state.schema_errors.extend(
                self._validator.validate(method, path, record.body, multipart=multipart)
            )
        for fault in state.faults:
            if fault.matches(method, path):
                fault.remaining -= 1
                fault.triggered += 1
                return json_response(fault.body, fault.status, fault.headers)

        if not is_api:
            return self._attachment(record)
        for route in self._routes:
            match = route.pattern.match(path) if route.method == method else None
            if match is None:
                continue
            record.route = f"{route.method} {route.template}"
            if route.bot_auth and request.headers.get("Authorization") != f"Bot {state.bot_token}":
                return error(401, 0, "401: Unauthorized")
            api_request = ApiRequest(
                method, path, match.groupdict(), record.query, record.body, record.uploads
            )
            try:
                return await route.handler(api_request)
            except _Reject as rejection:
                return rejection.response
            except MessageError as exc:
                return error(exc.status, exc.code, str(exc))
        state.unhandled.append(f"{method} {request.path}")
        return error(404, 0, "404: Not Found")

    def _attachment(self, record: RequestRecord) -> web.Response:
        parts = record.path.split("/")
        if record.method == "GET" and len(parts) == 5 and parts[1] == "attachments":
            found = self._state.messages.attachments.get(int(parts[3]) if parts[3].isdigit() else 0)
            if found is not None:
                return web.Response(body=found.data, headers={"Content-Type": found.content_type})
        self._state.unhandled.append(f"{record.method} {record.path}")
        return error(404, 0, "404: Not Found")

    # -- identity -------------------------------------------------------------------------

    async def _get_gateway(self, req: ApiRequest) -> web.Response:
        return json_response({"url": self._gateway_url()})

    async def _get_gateway_bot(self, req: ApiRequest) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        return json_response(
            {"url": self._gateway_url(), "shards": 1, "session_start_limit": limit}
        )

    async def _get_me(self, req: ApiRequest) -> web.Response:
        return json_response(self._state.world.user_payload(self._state.world.bot_user_id))

    async def _get_user(self, req: ApiRequest) -> web.Response:
        user_id = req.snowflake("user")
        if user_id not in self._state.world.members:
            raise _Reject(404, 10013, "Unknown User")
        return json_response(self._state.world.user_payload(user_id))

    async def _open_dm(self, req: ApiRequest) -> web.Response:
        try:
            recipient = int(req.json_object()["recipient_id"])
        except (KeyError, TypeError, ValueError):
            raise _Reject(400, 50035, "Invalid Form Body: recipient_id") from None
        if recipient not in self._state.world.members:
            raise _Reject(400, 50007, "Cannot send messages to this user")
        world = self._state.world
        return json_response(world.dm_payload(world.open_dm(recipient)))

    async def _get_application(self, req: ApiRequest) -> web.Response:
        return json_response(self._state.world.application_payload())

    # -- commands -------------------------------------------------------------------------

    def _command_scope(self, req: ApiRequest) -> int | None:
        world = self._state.world
        if req.snowflake("app") != world.application_id:
            raise _Reject(404, 10002, "Unknown Application")
        if "guild" not in req.params:
            return None
        guild_id = req.snowflake("guild")
        if guild_id not in {w.guild_id for w in self._state.worlds}:
            raise _Reject(404, 10004, "Unknown Guild")
        return guild_id

    async def _get_commands(self, req: ApiRequest) -> web.Response:
        guild_id = self._command_scope(req)
        commands = self._state.commands
        if guild_id is None:
            return json_response(commands.global_commands)
        return json_response(commands.guild_commands.get(guild_id, []))

    async def _put_commands(self, req: ApiRequest) -> web.Response:
        guild_id = self._command_scope(req)
        if not isinstance(req.body, list):
            raise _Reject(400, 50035, "Invalid Form Body: expected a list of commands")
        state = self._state
        stored = state.commands.overwrite(state.ids, state.world.application_id, guild_id, req.body)
        return json_response(stored)

    # -- interactions ---------------------------------------------------------------------

    def _past_deadline(self, ix: InteractionHandle) -> bool:
        deadline = self._state.callback_deadline
        return deadline is not None and time.monotonic() - ix.sent_at > deadline

    def _interaction_extra(self, ix: InteractionHandle) -> JSON:
        """Fields Discord puts on messages created through an interaction."""
        world = self._state.world_of(ix.channel_id)
        user = world.user_payload(ix.user_id)
        metadata: JSON = {
            "id": str(ix.id),
            "type": ix.type,
            "user": user,
            "authorizing_integration_owners": {"0": str(world.guild_id)},
        }
        extra: JSON = {
            "webhook_id": str(world.application_id),
            "application_id": str(world.application_id),
            "interaction_metadata": metadata,
        }
        if ix.type == APPLICATION_COMMAND:
            name = ix.payload["data"]["name"]
            metadata["name"] = name
            metadata["command_type"] = ix.payload["data"].get("type", 1)
            extra["interaction"] = {"id": str(ix.id), "type": ix.type, "name": name, "user": user}
        elif ix.message_id is not None:
            metadata["interacted_message_id"] = str(ix.message_id)
        return extra

    async def _callback(self, req: ApiRequest) -> web.Response:
        state = self._state
        ix = state.interactions.get(req.snowflake("interaction"))
        if ix is None or ix.token != req.params["token"] or ix.expired or self._past_deadline(ix):
            raise _Reject(404, 10062, "Unknown interaction")
        if ix.callback is not None:
            raise _Reject(400, 40060, "Interaction has already been acknowledged.")
        body = req.json_object()
        kind = body.get("type")
        data: JSON = body.get("data") or {}
        original: Message | None = None
        if kind in (CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE):
            loading = kind == DEFERRED_CHANNEL_MESSAGE
            original = state.messages.create(
                ix.channel_id,
                {"flags": data.get("flags", 0) & FLAG_EPHEMERAL} if loading else data,
                () if loading else req.uploads,
                author_id=state.world.bot_user_id,
                message_type=20 if ix.type == APPLICATION_COMMAND else 0,
                extra=self._interaction_extra(ix),
                interaction_id=ix.id,
                flags=FLAG_LOADING if loading else 0,
            )
        elif kind in (DEFERRED_UPDATE_MESSAGE, UPDATE_MESSAGE):
            if ix.message_id is None:
                raise _Reject(400, 50035, f"callback type {kind} needs a component interaction")
            if kind == UPDATE_MESSAGE:
                original = state.messages.edit(ix.message_id, data, req.uploads)
        elif kind == MODAL:
            if ix.type == MODAL_SUBMIT:
                raise _Reject(400, 50035, "a modal cannot answer a modal submit")
        elif kind == AUTOCOMPLETE_RESULT:
            if ix.type != AUTOCOMPLETE:
                raise _Reject(400, 50035, "autocomplete results answer autocomplete only")
        else:
            raise _Reject(400, 50035, f"Invalid Form Body: unsupported callback type {kind}")

        ix.record_callback(
            CallbackRecord(kind, body.get("data"), time.monotonic(), req.uploads), original
        )
        if original is not None:
            await self._dispatch_message(
                "MESSAGE_CREATE" if original.version == 0 else "MESSAGE_UPDATE", original
            )
        if not _truthy(req.query.get("with_response")):
            return no_content()
        result: JSON = {
            "interaction": {
                "id": str(ix.id),
                "type": ix.type,
                "response_message_loading": kind == DEFERRED_CHANNEL_MESSAGE,
                "response_message_ephemeral": bool(original and original.ephemeral),
            }
        }
        if original is not None:
            result["interaction"]["response_message_id"] = str(original.id)
            result["resource"] = {"type": kind, "message": original.payload}
        return json_response(result)

    def _webhook_interaction(self, req: ApiRequest) -> InteractionHandle:
        state = self._state
        if req.snowflake("app") != state.world.application_id:
            raise _Reject(404, 10015, "Unknown Webhook")
        ix = state.interactions_by_token.get(req.params["token"])
        if ix is None or ix.expired or time.monotonic() - ix.sent_at > state.token_lifetime:
            raise _Reject(401, 50027, "Invalid Webhook Token")
        return ix

    def _webhook_message(self, req: ApiRequest) -> tuple[InteractionHandle, int]:
        ix = self._webhook_interaction(req)
        ref = req.params["message"]
        if ref == "@original":
            if ix.original_message_id is None:
                raise _Reject(404, 10008, "Unknown Message")
            return ix, ix.original_message_id
        message_id = req.snowflake("message")
        if message_id != ix.original_message_id and all(m.id != message_id for m in ix.followups):
            raise _Reject(404, 10008, "Unknown Message")
        return ix, message_id

    async def _get_wh(self, req: ApiRequest) -> web.Response:
        _, message_id = self._webhook_message(req)
        return self._message_response(message_id)

    async def _patch_wh(self, req: ApiRequest) -> web.Response:
        _, message_id = self._webhook_message(req)
        message = self._state.messages.edit(message_id, req.json_object(), req.uploads)
        await self._dispatch_message("MESSAGE_UPDATE", message)
        return json_response(message.payload)

    async def _delete_wh(self, req: ApiRequest) -> web.Response:
        _, message_id = self._webhook_message(req)
        message = self._state.messages.delete(message_id)
        await self._dispatch_message("MESSAGE_DELETE", message)
        return no_content()

    async def _post_followup(self, req: ApiRequest) -> web.Response:
        ix = self._webhook_interaction(req)
        if ix.callback is None:
            raise _Reject(404, 10015, "Unknown Webhook")
        state = self._state
        body = req.json_object()
        original = ix.original
        if (
            ix.callback.type == DEFERRED_CHANNEL_MESSAGE
            and original is not None
            and original.loading
            and not original.deleted  # once deleted, a follow-up is a message of its own
        ):
            # Discord: the first follow-up after a deferred reply replaces the "thinking" message.
            message = state.messages.edit(original.id, body, req.uploads)
            await self._dispatch_message("MESSAGE_UPDATE", message)
        else:
            message = state.messages.create(
                ix.channel_id,
                body,
                req.uploads,
                author_id=state.world.bot_user_id,
                extra=self._interaction_extra(ix),
                interaction_id=ix.id,
            )
            await self._dispatch_message("MESSAGE_CREATE", message)
        ix.record_followup(message)
        return json_response(message.payload) if _truthy(req.query.get("wait")) else no_content()

    # -- channels and messages ------------------------------------------------------------

    def _channel(self, req: ApiRequest) -> int:
        channel_id = req.snowflake("channel")
        world = self._state.world_of(channel_id)
        if channel_id not in world.channels and channel_id not in world.dm_channels:
            raise _Reject(404, 10003, "Unknown Channel")
        return channel_id

    def _channel_message(self, req: ApiRequest) -> Message:
        channel_id = self._channel(req)
        message = self._state.messages.live(req.snowflake("message"))
        if message is None or message.channel_id != channel_id or message.ephemeral:
            raise _Reject(404, 10008, "Unknown Message")
        return message

    def _message_response(self, message_id: int) -> web.Response:
        message = self._state.messages.live(message_id)
        if message is None:
            raise _Reject(404, 10008, "Unknown Message")
        return json_response(message.payload)

    async def _dispatch_message(self, event: str, message: Message) -> None:
        """Gateway echo of a visible message change (needs the GUILD_MESSAGES intent)."""
        if message.ephemeral or message.channel_id in self._state.world.dm_channels:
            return
        world = self._state.world_of(message.channel_id)
        if event == "MESSAGE_DELETE":
            data: JSON = {
                "id": str(message.id),
                "channel_id": str(message.channel_id),
                "guild_id": str(world.guild_id),
            }
        else:
            data = {
                **message.payload,
                "guild_id": str(world.guild_id),
                "member": world.member_payload(message.author_id, with_user=False),
            }
        await self._gateway.dispatch(event, data, intent=GUILD_MESSAGES)

    async def _get_channel(self, req: ApiRequest) -> web.Response:
        channel_id = self._channel(req)
        world = self._state.world_of(channel_id)
        if channel_id in world.dm_channels:
            return json_response(world.dm_payload(channel_id))
        return json_response(world.channel_payload(channel_id))

    async def _get_channel_messages(self, req: ApiRequest) -> web.Response:
        channel_id = self._channel(req)
        limit = int(req.query.get("limit", "50"))
        newest_first = list(reversed(self._state.messages.channel_messages(channel_id)))
        return json_response([m.payload for m in newest_first[:limit]])

    async def _post_message(self, req: ApiRequest) -> web.Response:
        state = self._state
        channel_id = self._channel(req)
        allowed = state.world.permissions(state.world.bot_user_id)
        needed = VIEW_CHANNEL | SEND_MESSAGES | (ATTACH_FILES if req.uploads else 0)
        if channel_id in state.world.channels and allowed & needed != needed:
            raise _Reject(403, 50013, "Missing Permissions")
        body = req.json_object()
        if body.get("enforce_nonce") and body.get("nonce") is not None:
            # As Discord does: a retried post with the same nonce returns the first message.
            earlier = state.messages.with_nonce(channel_id, str(body["nonce"]))
            if earlier is not None:
                return json_response(earlier.payload)
        message = state.messages.create(
            channel_id, body, req.uploads, author_id=state.world.bot_user_id
        )
        await self._dispatch_message("MESSAGE_CREATE", message)
        return json_response(message.payload)

    async def _get_message(self, req: ApiRequest) -> web.Response:
        return json_response(self._channel_message(req).payload)

    async def _patch_message(self, req: ApiRequest) -> web.Response:
        current = self._channel_message(req)
        if current.author_id != self._state.world.bot_user_id:
            raise _Reject(403, 50005, "Cannot edit a message authored by another user")
        message = self._state.messages.edit(current.id, req.json_object(), req.uploads)
        await self._dispatch_message("MESSAGE_UPDATE", message)
        return json_response(message.payload)

    async def _delete_message(self, req: ApiRequest) -> web.Response:
        current = self._channel_message(req)
        message = self._state.messages.delete(current.id)
        await self._dispatch_message("MESSAGE_DELETE", message)
        return no_content()

    async def _typing(self, req: ApiRequest) -> web.Response:
        self._channel(req)
        return no_content()

    # -- guild ----------------------------------------------------------------------------

    def _guild(self, req: ApiRequest) -> None:
        if req.snowflake("guild") != self._state.world.guild_id:
            raise _Reject(404, 10004, "Unknown Guild")

    async def _get_guild(self, req: ApiRequest) -> web.Response:
        self._guild(req)
        payload = self._state.world.guild_payload(all_members=False)
        for gateway_only in ("members", "channels", "threads", "presences", "voice_states"):
            payload.pop(gateway_only)
        return json_response(payload)

    async def _get_guild_channels(self, req: ApiRequest) -> web.Response:
        self._guild(req)
        world = self._state.world
        return json_response([world.channel_payload(c) for c in world.channels])

    async def _get_guild_roles(self, req: ApiRequest) -> web.Response:
        self._guild(req)
        world = self._state.world
        return json_response([world.role_payload(r) for r in world.roles])

    async def _get_member(self, req: ApiRequest) -> web.Response:
        self._guild(req)
        user_id = req.snowflake("user")
        if user_id not in self._state.world.members:
            raise _Reject(404, 10007, "Unknown Member")
        return json_response(self._state.world.member_payload(user_id))


async def _read_body(request: web.Request) -> tuple[Any, tuple[Upload, ...]]:
    """JSON body, or multipart `payload_json` plus `files[n]` parts."""
    if not request.content_type.startswith("multipart/"):
        raw = await request.read()
        return (_parse_json(raw) if raw else None), ()
    body: Any = None
    uploads: list[Upload] = []
    reader = await request.multipart()
    async for part in reader:
        if not isinstance(part, BodyPartReader):
            raise _BadBody("nested multipart is not supported")
        name = part.name or ""
        data = await part.read()
        if name == "payload_json":
            body = _parse_json(data)
        elif match := _FILE_FIELD.match(name):
            uploads.append(
                Upload(
                    index=int(match[1]),
                    filename=part.filename or f"file{match[1]}",
                    content_type=part.headers.get("Content-Type", "application/octet-stream"),
                    data=bytes(data),
                )
            )
        else:
            raise _BadBody(f"unexpected multipart field {name!r} (expected payload_json, files[n])")
    return body, tuple(uploads)


def _parse_json(raw: bytes | bytearray) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise _BadBody(f"body is not valid JSON ({exc})") from None
