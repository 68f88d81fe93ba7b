"""Interaction payloads a Discord client would produce, and the handle tests await on."""

# Waits take a timeout so that a failure can say what was awaited and show the server's
# diagnostics, which a bare asyncio.timeout() around the call could not.
# ruff: noqa: ASYNC109

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .messages import MessageStore
from .models import JSON, CallbackRecord, ChangeSignal, Message
from .world import ATTACHMENT_SIZE_LIMIT, World

# Application command option types (Discord's values).
SUB_COMMAND = 1
SUB_COMMAND_GROUP = 2
STRING = 3
INTEGER = 4
BOOLEAN = 5
USER = 6
CHANNEL = 7
ROLE = 8
MENTIONABLE = 9
NUMBER = 10
ATTACHMENT = 11

# Interaction types.
APPLICATION_COMMAND = 2
MESSAGE_COMPONENT = 3
MODAL_SUBMIT = 5

FileSpec = tuple[str, bytes, str]
"""(filename, data, content_type) of a file a user attaches to a slash command."""


class InteractionHandle:
    """One interaction the test sent to the bot, and everything the bot answered.

    Times are `time.monotonic()` values. "Original" is the message the interaction's
    initial response created (types 4/5) or updated (types 6/7, a component's message).
    """

    def __init__(
        self,
        *,
        interaction_id: int,
        token: str,
        type: int,
        payload: JSON,
        user_id: int,
        channel_id: int,
        message_id: int | None,
        sent_at: float,
        messages: MessageStore,
        signal: ChangeSignal,
        diagnostics: Callable[[], str],
    ) -> None:
        self.id = interaction_id
        self.token = token
        self.type = type
        self.payload = payload
        """The INTERACTION_CREATE data as sent over the gateway."""
        self.user_id = user_id
        self.channel_id = channel_id
        self.message_id = message_id
        """For component interactions: the message whose component was used."""
        self.sent_at = sent_at
        self.expired = False
        self._messages = messages
        self._signal = signal
        self._diagnostics = diagnostics
        self._callback: CallbackRecord | None = None
        self._original_id: int | None = None
        self._original_from_version = 0
        self._followup_ids: list[int] = []

    def __repr__(self) -> str:
        return f"<InteractionHandle id={self.id} type={self.type} callback={self._callback}>"

    # -- what the bot did (read) ----------------------------------------------------------

    @property
    def callback(self) -> CallbackRecord | None:
        return self._callback

    @property
    def original_message_id(self) -> int | None:
        return self._original_id

    @property
    def edits(self) -> list[Message]:
        """Every version of the original response this interaction produced, oldest first."""
        if self._original_id is None:
            return []
        return self._messages.versions(self._original_id)[self._original_from_version :]

    @property
    def original(self) -> Message | None:
        edits = self.edits
        return edits[-1] if edits else None

    @property
    def followups(self) -> list[Message]:
        """Latest version of each follow-up message, in the order they were sent.

        As on Discord, the first follow-up after a deferred reply replaces the "thinking"
        message, so that follow-up is also the original response.
        """
        return [m for i in self._followup_ids if (m := self._messages.latest(i)) is not None]

    # -- waiting --------------------------------------------------------------------------

    async def wait_for_callback(self, timeout: float = 5.0) -> CallbackRecord:
        return await self._signal.wait_until(
            lambda: self._callback, timeout, f"the callback of {self!r}", self._diagnostics
        )

    async def wait_for_original(
        self, predicate: Callable[[Message], bool] | None = None, timeout: float = 5.0
    ) -> Message:
        """The first version of the original response (in edit order) matching `predicate`.

        The default predicate skips the "thinking" placeholder a deferral creates.
        """
        check = predicate or (lambda m: not m.loading and not m.deleted)
        return await self._signal.wait_until(
            lambda: next((m for m in self.edits if check(m)), None),
            timeout,
            f"an original response of {self!r} matching the predicate "
            f"(versions so far: {self.edits})",
            self._diagnostics,
        )

    async def wait_for_followup(
        self, predicate: Callable[[Message], bool] | None = None, timeout: float = 5.0
    ) -> Message:
        """The first follow-up (latest version of each) that matches `predicate`."""
        check = predicate or (lambda m: True)
        return await self._signal.wait_until(
            lambda: next((m for m in self.followups if check(m)), None),
            timeout,
            f"a follow-up of {self!r} matching the predicate",
            self._diagnostics,
        )

    # -- updated by the REST layer --------------------------------------------------------

    def record_callback(self, record: CallbackRecord, original: Message | None) -> None:
        self._callback = record
        if original is not None:
            self._original_id = original.id
            # Only versions from this response on belong to this interaction.
            self._original_from_version = original.version
        elif record.type == 6 and self.message_id is not None:
            # A deferred update: later edits of @original edit the component's message.
            self._original_id = self.message_id
            self._original_from_version = len(self._messages.versions(self.message_id))

    def record_followup(self, message: Message) -> None:
        if message.id not in self._followup_ids:
            self._followup_ids.append(message.id)


# -- payload builders ---------------------------------------------------------------------


def interaction_envelope(
    world: World,
    *,
    interaction_id: int,
    token: str,
    type: int,
    data: JSON,
    user_id: int,
    channel_id: int,
    locale: str,
    message: JSON | None = None,
    upload_limit: int = ATTACHMENT_SIZE_LIMIT,
) -> JSON:
    """The INTERACTION_CREATE fields every interaction carries: a guild's, or in a DM
    channel (a button on a message the bot sent by DM) a DM's."""
    payload: JSON = {
        "id": str(interaction_id),
        "application_id": str(world.application_id),
        "type": type,
        "data": data,
        "channel_id": str(channel_id),
        "token": token,
        "version": 1,
        "app_permissions": str(world.permissions(world.bot_user_id)),
        "locale": locale,
        "entitlements": [],
        "attachment_size_limit": upload_limit,
    }
    if channel_id in world.dm_channels:  # in the bot's DMs: no server, no member
        payload.update(
            channel=world.dm_payload(channel_id),
            user=world.user_payload(user_id),
            authorizing_integration_owners={"0": "0"},
            context=1,  # BOT_DM
        )
    else:
        payload.update(
            guild_id=str(world.guild_id),
            guild={"id": str(world.guild_id), "locale": "en-US", "features": []},
            channel={
                **world.channel_payload(channel_id),
                "permissions": str(world.permissions(user_id)),
            },
            member=world.member_payload(user_id, with_permissions=True),
            guild_locale="en-US",
            authorizing_integration_owners={"0": str(world.guild_id)},
            context=0,  # GUILD
        )
    if message is not None:
        payload["message"] = message
    return payload


def _find_option(options: Sequence[JSON], name: str, where: str) -> JSON:
    for option in options:
        if option["name"] == name:
            return option
    known = ", ".join(o["name"] for o in options) or "none"
    raise ValueError(f"{where} has no option {name!r} (options: {known})")


def _check_type(name: str, value: object, expected: type | tuple[type, ...]) -> None:
    if isinstance(value, bool) and expected is not bool:
        raise TypeError(f"option {name!r} got a bool; expected {expected}")
    if not isinstance(value, expected):
        raise TypeError(f"option {name!r} got {type(value).__name__}; expected {expected}")


def build_command_data(
    command: JSON,
    path: Sequence[str],
    values: Mapping[str, object],
    files: Mapping[str, FileSpec],
    *,
    world: World,
    messages: MessageStore,
    channel_id: int,
    user_id: int,
) -> JSON:
    """`data` of a CHAT_INPUT interaction, typed by the synced command's option types."""
    options_def: Sequence[JSON] = command.get("options") or []
    where = f"/{command['name']}"
    chain: list[JSON] = []  # subcommand (group) options from outermost inward
    for part in path:
        sub = _find_option(options_def, part, where)
        if sub["type"] not in (SUB_COMMAND, SUB_COMMAND_GROUP):
            raise ValueError(f"{where} {part!r} is not a subcommand or group")
        chain.append({"name": part, "type": sub["type"], "options": []})
        options_def = sub.get("options") or []
        where += f" {part}"
    if any(o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP) for o in options_def):
        names = ", ".join(o["name"] for o in options_def)
        raise ValueError(f"{where} needs a subcommand ({names}); pass e.g. '{where[1:]} <sub>'")

    resolved: dict[str, dict[str, JSON]] = {}

    def resolve(kind: str, key: int, payload: JSON) -> None:
        resolved.setdefault(kind, {})[str(key)] = payload

    options: list[JSON] = []
    given = {**values, **{name: spec for name, spec in files.items()}}
    for name, value in given.items():
        option = _find_option(options_def, name, where)
        kind = option["type"]
        out: Any
        if kind == STRING:
            _check_type(name, value, str)
            out = value
        elif kind == INTEGER:
            _check_type(name, value, int)
            out = value
        elif kind == BOOLEAN:
            _check_type(name, value, bool)
            out = value
        elif kind == NUMBER:
            _check_type(name, value, (int, float))
            out = value
        elif kind in (USER, MENTIONABLE) and isinstance(value, int) and value in world.members:
            resolve("users", value, world.user_payload(value))
            resolve(
                "members",
                value,
                world.member_payload(value, with_user=False, with_permissions=True),
            )
            out = str(value)
        elif kind in (ROLE, MENTIONABLE) and isinstance(value, int) and value in world.roles:
            resolve("roles", value, world.role_payload(value))
            out = str(value)
        elif kind == CHANNEL and isinstance(value, int):
            channel = world.channel_payload(value)
            channel["permissions"] = str(world.permissions(user_id))
            resolve("channels", value, channel)
            out = str(value)
        elif kind == ATTACHMENT:
            if name not in files:
                raise TypeError(f"option {name!r} is an attachment; pass it via attachments=")
            filename, file_bytes, content_type = files[name]
            attachment = messages.add_attachment(channel_id, filename, file_bytes, content_type)
            resolve("attachments", attachment.id, {**attachment.to_payload(), "ephemeral": True})
            out = str(attachment.id)
        else:
            raise TypeError(f"option {name!r} (type {kind}) cannot take {value!r}")
        options.append({"name": name, "type": kind, "value": out})

    missing = [o["name"] for o in options_def if o.get("required") and o["name"] not in given]
    if missing:
        raise ValueError(f"{where} is missing required options {missing}")

    # Nest the leaf options inside the subcommand chain.
    for sub in reversed(chain):
        sub["options"] = options
        options = [sub]

    data: JSON = {
        "id": command["id"],
        "name": command["name"],
        "type": command.get("type", 1),
        "options": options,
    }
    if command.get("guild_id"):
        data["guild_id"] = command["guild_id"]
    if resolved:
        data["resolved"] = resolved
    return data


def build_modal_components(modal: JSON, values: Mapping[str, str | Sequence[str]]) -> list[JSON]:
    """Mirror a modal's layout (action rows or labels) with the user's inputs filled in."""
    unknown = set(values)

    def submitted(component: JSON) -> JSON:
        custom_id = component.get("custom_id")
        unknown.discard(custom_id or "")
        value = values.get(custom_id, "") if custom_id is not None else ""
        out: JSON = {"type": component["type"], "id": component.get("id", 0)}
        if custom_id is not None:
            out["custom_id"] = custom_id
        if component["type"] == 4:  # text input
            out["value"] = value if isinstance(value, str) else "\n".join(value)
        else:  # selects
            out["values"] = [value] if isinstance(value, str) else list(value)
        return out

    result: list[JSON] = []
    for top in modal.get("components", []):
        if top["type"] == 1:
            result.append({"type": 1, "components": [submitted(c) for c in top["components"]]})
        elif top["type"] == 18:  # label
            result.append({"type": 18, "component": submitted(top["component"])})
    if unknown:
        raise ValueError(f"modal {modal.get('custom_id')!r} has no inputs {sorted(unknown)}")
    return result
