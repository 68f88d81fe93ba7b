"""Everything the local Discord remembers, shared by its gateway, REST API and test API."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field

from .interactions import InteractionHandle
from .messages import MessageStore
from .models import JSON, ChangeSignal, Fault, RequestRecord, Snowflakes
from .world import ATTACHMENT_SIZE_LIMIT, World


@dataclass
class CommandStore:
    """Application commands as the bot last bulk-overwrote them."""

    global_commands: list[JSON] = field(default_factory=list)
    guild_commands: dict[int, list[JSON]] = field(default_factory=dict)
    syncs: int = 0

    def overwrite(
        self, ids: Snowflakes, application_id: int, guild_id: int | None, body: list[JSON]
    ) -> list[JSON]:
        previous = (
            self.global_commands if guild_id is None else self.guild_commands.get(guild_id, [])
        )
        # Discord keeps a command's id across overwrites when name and type match.
        known = {(c["name"], c.get("type", 1)): c["id"] for c in previous}
        stored = []
        for command in body:
            kind = command.get("type", 1)
            entry: JSON = {
                "type": kind,
                "description": "",
                "options": [],
                "default_member_permissions": None,
                "dm_permission": True,
                "nsfw": False,
                "contexts": None,
                "integration_types": [0],
                **command,
                "id": known.get((command["name"], kind)) or str(ids.next()),
                "application_id": str(application_id),
                "version": str(ids.next()),
            }
            if guild_id is not None:
                entry["guild_id"] = str(guild_id)
            stored.append(entry)
        if guild_id is None:
            self.global_commands = stored
        else:
            self.guild_commands[guild_id] = stored
        self.syncs += 1
        return stored

    def all(self) -> list[JSON]:
        return [*self.global_commands, *(c for cs in self.guild_commands.values() for c in cs)]

    def find(self, name: str, guild_id: int, kind: int = 1) -> JSON | None:
        """A guild command shadows a global one of the same name, as in Discord's client."""
        for command in [*self.guild_commands.get(guild_id, []), *self.global_commands]:
            if command["name"] == name and command.get("type", 1) == kind:
                return command
        return None


def discord_shaped_token(user_id: int) -> str:
    """A random token shaped like Discord's: the bot's id in base64, a time stamp, an HMAC."""
    user = base64.urlsafe_b64encode(str(user_id).encode()).decode().rstrip("=")
    return f"{user}.{secrets.token_urlsafe(4)}.{secrets.token_urlsafe(28)}"


class ServerState:
    def __init__(
        self,
        *,
        guild_name: str,
        callback_deadline: float | None,
        token_lifetime: float,
        upload_limit: int = ATTACHMENT_SIZE_LIMIT,
    ) -> None:
        self.ids = Snowflakes()
        self.world = World(self.ids, guild_name)
        # Further guilds the bot is in (LocalDiscord.add_guild), by guild id.
        self.other_worlds: dict[int, World] = {}
        self.messages = MessageStore(self.ids, self.world)
        self.signal = ChangeSignal()
        self.commands = CommandStore()
        self.bot_token = discord_shaped_token(self.world.bot_user_id)
        self.callback_deadline = callback_deadline
        self.token_lifetime = token_lifetime
        # What interactions announce as `attachment_size_limit`; larger uploads get 413.
        self.upload_limit = upload_limit
        self.interactions: dict[int, InteractionHandle] = {}
        self.interactions_by_token: dict[str, InteractionHandle] = {}
        self.requests: list[RequestRecord] = []
        self.unhandled: list[str] = []
        self.schema_errors: list[str] = []
        self.faults: list[Fault] = []

    @property
    def worlds(self) -> list[World]:
        """The main guild, then the others."""
        return [self.world, *self.other_worlds.values()]

    def world_of(self, channel_id: int) -> World:
        """The guild a channel belongs to (DM channels: the main world, which holds them)."""
        for world in self.other_worlds.values():
            if channel_id in world.channels:
                return world
        return self.world

    def diagnostics(self) -> str:
        """Appended to timeout errors: the usual reasons a bot never answered."""
        parts = []
        if self.unhandled:
            parts.append(f"unhandled={self.unhandled}")
        if self.schema_errors:
            parts.append(f"schema_errors={self.schema_errors}")
        failed = [
            f"{r.method} {r.path} -> {r.status}" for r in self.requests if (r.status or 0) >= 400
        ]
        if failed:
            parts.append(f"failed requests={failed[-5:]}")
        return "; ".join(parts)
