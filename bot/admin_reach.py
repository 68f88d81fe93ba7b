"""Who may administer what: the bot's owners everywhere, a server's managers in their server.

A public bot can be invited to any server, and whoever creates a server holds
Manage Server there, so holding it must never reach past that server. The rule
is pure (no Discord, no SQL): the Discord door builds an `Asker` from an
interaction, and the admin console applies the `AdminScope` it gets back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum


class AdminReach(IntEnum):
    """How far a member's admin rights go; a larger reach includes the smaller ones."""

    NONE = 0
    SERVER = 1  # the server the command was used in: its blocklist, usage, audit, jobs
    GLOBAL = 2  # every server, and what belongs to no server (quotas, bans, models)


# The /admin actions a server's manager may take in their own server; every other action
# (a command added later included) needs a global admin until someone decides otherwise.
SERVER_ACTIONS = frozenset(
    {
        "usage",  # that server's jobs only
        "audit",  # that server's entries only
        "export",  # that server's ledger and audit only
        "queue",  # that server's jobs only
        "queue.cancel",
        "blocklist.add",  # that server's terms only, never `everywhere`
        "blocklist.remove",
        "blocklist.list",  # the terms in force there (global ones included: they apply)
    }
)


@dataclass(frozen=True)
class Admins:
    """The global admins: the application's owner or team (from Discord at start) and the
    `[admin]` ids; and `[discord] allowed_guild_ids`, outside which /admin is refused."""

    user_ids: frozenset[int]
    role_ids: frozenset[int] = frozenset()
    allowed_guild_ids: frozenset[int] = frozenset()  # empty: every server

    @classmethod
    def of(
        cls,
        owner_ids: Iterable[int],
        user_ids: Iterable[int],
        role_ids: Iterable[int],
        allowed_guild_ids: Iterable[int],
    ) -> Admins:
        return cls(
            frozenset([*owner_ids, *user_ids]), frozenset(role_ids), frozenset(allowed_guild_ids)
        )


@dataclass(frozen=True)
class Asker:
    """Who asks, and where: what the rule reads of an interaction."""

    user_id: int
    guild_id: int | None  # None: a direct message
    role_ids: tuple[int, ...] = ()
    manages_guild: bool = False  # holds Manage Server in `guild_id`


def admin_reach(admins: Admins, asker: Asker) -> AdminReach:
    """How far `asker` administers the bot, here."""
    if admins.allowed_guild_ids and asker.guild_id not in admins.allowed_guild_ids:
        return AdminReach.NONE
    if asker.user_id in admins.user_ids or not admins.role_ids.isdisjoint(asker.role_ids):
        return AdminReach.GLOBAL
    if asker.guild_id is not None and asker.manages_guild:
        return AdminReach.SERVER
    return AdminReach.NONE


def needed_reach(action: str, everywhere: bool = False) -> AdminReach:
    """The reach an /admin action needs ("blocklist.add"); `everywhere`: it asks to act on
    every server (a global blocklist term)."""
    if action in SERVER_ACTIONS and not everywhere:
        return AdminReach.SERVER
    return AdminReach.GLOBAL


@dataclass(frozen=True)
class AdminScope:
    """What one admin call may see and change."""

    reach: AdminReach
    guild_id: int | None  # where the call was made

    @classmethod
    def of(cls, admins: Admins, asker: Asker) -> AdminScope:
        return cls(admin_reach(admins, asker), asker.guild_id)

    @property
    def only_guild(self) -> int | None:
        """The server whose rows the call may read or change; None: every server's.
        Without reach there is none to read (fails closed rather than reading all)."""
        if self.reach is AdminReach.NONE or (
            self.reach is AdminReach.SERVER and self.guild_id is None
        ):
            raise PermissionError("no admin reach here")
        return None if self.reach is AdminReach.GLOBAL else self.guild_id

    def allows(self, action: str, everywhere: bool = False) -> bool:
        return self.reach >= needed_reach(action, everywhere)

    def covers_job(self, job_guild_id: int | None) -> bool:
        """Whether the call may act on a job made in `job_guild_id` (None: by DM, or over
        HTTP with a key made in a DM; a key made in a server makes its jobs there)."""
        if self.reach is AdminReach.GLOBAL:
            return True
        return (
            self.reach is AdminReach.SERVER
            and job_guild_id is not None
            and job_guild_id == self.guild_id
        )
