"""A guild the local server simulates: users, roles, channels, permissions, payloads.

The server holds one such world, its main guild, and may hold more: other servers
the same bot was invited to, each made and owned by someone else."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from .models import JSON, Snowflakes

# Permission bits the server checks or hands out (Discord's values).
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
USE_EXTERNAL_EMOJIS = 1 << 18
USE_APPLICATION_COMMANDS = 1 << 31
ADMINISTRATOR = 1 << 3
ALL_PERMISSIONS = (1 << 51) - 1

EVERYONE_PERMISSIONS = (
    (VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS | ATTACH_FILES | READ_MESSAGE_HISTORY)
    | USE_EXTERNAL_EMOJIS
    | USE_APPLICATION_COMMANDS
)

# Interactions carry the upload limit of the guild (25 MiB without boosts).
ATTACHMENT_SIZE_LIMIT = 25 * 1024 * 1024

APPLICATION_FLAGS = (1 << 15) | (1 << 19)  # members / message content intents "limited"


def iso_timestamp(when: datetime.datetime | None = None) -> str:
    return (when or datetime.datetime.now(datetime.UTC)).isoformat()


@dataclass
class Role:
    id: int
    name: str
    permissions: int
    position: int


@dataclass
class Member:
    user_id: int
    name: str
    roles: list[int] = field(default_factory=list)
    permissions: int | None = None
    """Fixed effective permissions; None computes them from roles."""
    bot: bool = False
    nick: str | None = None
    joined_at: str = field(default_factory=iso_timestamp)


@dataclass
class Channel:
    id: int
    name: str
    type: int = 0  # GUILD_TEXT
    position: int = 0
    nsfw: bool = False  # age-restricted, as a server's admins mark a channel


class World:
    """Identity of the bot and application plus one test guild.

    `application_id`: the application (and bot user) of another world, for a further
    guild the same bot is in; unset: a new application."""

    def __init__(self, ids: Snowflakes, guild_name: str, application_id: int | None = None) -> None:
        self.application_id = application_id or ids.next()
        self.bot_user_id = self.application_id  # as on Discord: the bot user shares the app id
        self.guild_id = ids.next()
        self.guild_name = guild_name
        self.roles: dict[int, Role] = {
            self.guild_id: Role(self.guild_id, "@everyone", EVERYONE_PERMISSIONS, 0)
        }
        self.members: dict[int, Member] = {}
        self.channels: dict[int, Channel] = {}
        # DM channels the bot opened: channel id -> the member at the other end.
        self.dm_channels: dict[int, int] = {}
        self._ids = ids

        bot_role = self.add_role("Atelier", EVERYONE_PERMISSIONS)
        self.add_member(Member(self.bot_user_id, "Atelier", roles=[bot_role], bot=True))
        self.owner_id = ids.next()
        self.add_member(Member(self.owner_id, "owner"))
        self.user_id = ids.next()
        self.add_member(Member(self.user_id, "tester"))
        self.channel_id = self.add_channel("general")
        # The application's team (set_team): its owner and each member's role; None: the
        # application belongs to `owner_id` alone.
        self.team: tuple[int, dict[int, str]] | None = None

    # -- mutation -------------------------------------------------------------------------

    def add_role(self, name: str, permissions: int, role_id: int | None = None) -> int:
        role_id = role_id or self._ids.next()
        self.roles[role_id] = Role(role_id, name, permissions, position=len(self.roles))
        return role_id

    def add_member(self, member: Member) -> None:
        unknown = [r for r in member.roles if r not in self.roles]
        if unknown:
            raise ValueError(f"unknown role ids {unknown}; create them with add_role() first")
        self.members[member.user_id] = member

    def add_channel(self, name: str, channel_id: int | None = None, nsfw: bool = False) -> int:
        channel_id = channel_id or self._ids.next()
        self.channels[channel_id] = Channel(
            channel_id, name, position=len(self.channels), nsfw=nsfw
        )
        return channel_id

    def open_dm(self, user_id: int) -> int:
        """The bot's DM channel with a member (made on first use, as Discord does)."""
        self.member(user_id)
        for channel_id, recipient in self.dm_channels.items():
            if recipient == user_id:
                return channel_id
        channel_id = self._ids.next()
        self.dm_channels[channel_id] = user_id
        return channel_id

    # -- queries --------------------------------------------------------------------------

    def member(self, user_id: int) -> Member:
        try:
            return self.members[user_id]
        except KeyError:
            raise ValueError(f"user {user_id} is not a member; add it with add_member()") from None

    def channel(self, channel_id: int) -> Channel:
        try:
            return self.channels[channel_id]
        except KeyError:
            raise ValueError(f"unknown channel {channel_id}; add it with add_channel()") from None

    def permissions(self, user_id: int) -> int:
        """Effective permissions (no channel overwrites exist in this guild)."""
        member = self.member(user_id)
        if member.permissions is not None:
            return member.permissions
        if user_id == self.owner_id:
            return ALL_PERMISSIONS
        value = self.roles[self.guild_id].permissions
        for role_id in member.roles:
            value |= self.roles[role_id].permissions
        return ALL_PERMISSIONS if value & ADMINISTRATOR else value

    # -- payloads -------------------------------------------------------------------------

    def user_payload(self, user_id: int) -> JSON:
        member = self.member(user_id)
        return {
            "id": str(user_id),
            "username": member.name,
            "discriminator": "0",
            "global_name": None if member.bot else member.name,
            "avatar": None,
            "bot": member.bot,
            "public_flags": 0,
            "flags": 0,
        }

    def member_payload(
        self, user_id: int, *, with_user: bool = True, with_permissions: bool = False
    ) -> JSON:
        member = self.member(user_id)
        payload: JSON = {
            "nick": member.nick,
            "avatar": None,
            "banner": None,
            "roles": [str(r) for r in member.roles],
            "joined_at": member.joined_at,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,  # discord.py indexes data['flags']
            "communication_disabled_until": None,
        }
        if with_user:
            payload["user"] = self.user_payload(user_id)
        if with_permissions:
            payload["permissions"] = str(self.permissions(user_id))
        return payload

    def role_payload(self, role_id: int) -> JSON:
        role = self.roles[role_id]
        return {
            "id": str(role.id),
            "name": role.name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": role.position,
            "permissions": str(role.permissions),
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }

    def channel_payload(self, channel_id: int) -> JSON:
        channel = self.channel(channel_id)
        return {
            "id": str(channel.id),
            "type": channel.type,
            "guild_id": str(self.guild_id),
            "name": channel.name,
            "position": channel.position,
            "permission_overwrites": [],
            "nsfw": channel.nsfw,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "parent_id": None,
            "flags": 0,
        }

    def dm_payload(self, channel_id: int) -> JSON:
        return {
            "id": str(channel_id),
            "type": 1,  # DM
            "last_message_id": None,
            "recipients": [self.user_payload(self.dm_channels[channel_id])],
            "flags": 0,
        }

    def guild_payload(self, *, all_members: bool) -> JSON:
        """GUILD_CREATE data. Without the members intent Discord sends only the bot itself."""
        member_ids = list(self.members) if all_members else [self.bot_user_id]
        return {
            "id": str(self.guild_id),
            "name": self.guild_name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": "en-US",
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "application_id": None,
            "features": [],
            "max_members": 500_000,
            "max_video_channel_users": 25,
            "roles": [self.role_payload(r) for r in self.roles],
            "emojis": [],
            "stickers": [],
            "joined_at": self.members[self.bot_user_id].joined_at,
            "large": False,
            "unavailable": False,
            "member_count": len(self.members),
            "members": [self.member_payload(m) for m in member_ids],
            "channels": [self.channel_payload(c) for c in self.channels],
            "threads": [],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    def team_payload(self) -> JSON | None:
        if self.team is None:
            return None
        owner_id, roles = self.team
        return {
            "id": str(self.application_id + 1),
            "icon": None,
            "name": "Atelier team",
            "owner_user_id": str(owner_id),
            "members": [
                {
                    "membership_state": 2,
                    "team_id": str(self.application_id + 1),
                    "user": self.user_payload(user_id),
                    "role": role,
                    "permissions": ["*"],
                }
                for user_id, role in roles.items()
            ],
        }

    def application_payload(self) -> JSON:
        """GET /oauth2/applications/@me. A team's application is owned by a user that
        stands for the team, as on Discord."""
        team_user = {
            **self.user_payload(self.owner_id),
            "id": str(self.application_id + 1),
            "username": "team" + str(self.application_id + 1),
        }
        return {
            "id": str(self.application_id),
            "name": "Atelier",
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": "0" * 64,
            "flags": APPLICATION_FLAGS,
            "owner": self.user_payload(self.owner_id) if self.team is None else team_user,
            "team": self.team_payload(),
            "bot": self.user_payload(self.bot_user_id),
            "hook": True,
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "approximate_guild_count": 1,
            "integration_types_config": {"0": {}},
        }
