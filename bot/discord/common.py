"""What every cog shares: the services it is given, who is asking, the admin rule, refusals."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import discord

from ..config import AdminConfig, Config
from ..jobs.service import JobService
from ..ops.status import StatusReport
from ..reports.console import AdminReports
from ..store.audit import Actor, AuditLog
from ..store.guilds import GuildStore
from ..store.jobs import JobStore, Requester
from ..store.quotas import QuotaStore
from ..store.users import UserStore
from .delivery import Delivery

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Services:
    """Everything the commands read and change, built once in bot.app and passed to each cog."""

    config: Config
    jobs: JobService
    users: UserStore
    quotas: QuotaStore
    guilds: GuildStore
    reports: AdminReports
    delivery: Delivery
    # /admin status (bot.ops); None where no operations service was built (tests).
    status: StatusReport | None = None

    @property
    def store(self) -> JobStore:
        return self.jobs.store

    @property
    def audit(self) -> AuditLog:
        return self.reports.audit


def roles_of(interaction: discord.Interaction[Any]) -> list[int]:
    """The member's Discord role ids (none in DMs)."""
    return [role.id for role in getattr(interaction.user, "roles", [])]


def actor_of(interaction: discord.Interaction[Any]) -> Actor:
    return Actor(interaction.user.id, interaction.guild_id, interaction.channel_id)


def requester_of(interaction: discord.Interaction[Any]) -> Requester:
    return Requester(
        user_id=interaction.user.id,
        user_name=interaction.user.name,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        interaction_id=interaction.id,
        interaction_token=interaction.token,
        role_ids=tuple(roles_of(interaction)),
        upload_limit=interaction.filesize_limit,
    )


def is_admin(admin: AdminConfig, interaction: discord.Interaction[Any]) -> bool:
    """Whether the member is an admin per `[admin]`: listed by id or holding a listed
    role; with both lists empty, members with Manage Server are."""
    if not admin.user_ids and not admin.role_ids:
        permissions = getattr(interaction.user, "guild_permissions", None)
        return bool(permissions and permissions.manage_guild)
    return interaction.user.id in admin.user_ids or bool(
        set(roles_of(interaction)) & set(admin.role_ids)
    )


async def refuse(
    interaction: discord.Interaction[Any],
    store: JobStore,
    command: str,
    reason: str,
    kind: str | None = None,
) -> None:
    """Answer `reason` privately (first, within Discord's 3 s), then audit the refusal.

    `kind` says why for the metrics (e.g. "moderation"); left out it is read from
    the command (bot.ops.facts.Refusal).

    After a deferral the refusal is a new ephemeral follow-up, not an edit of the
    deferred (public) reply, so nobody else reads it; the "thinking" reply is removed.
    """
    await tell_privately(interaction, reason)
    await store.record_refusal(
        action=f"{command}.refused",
        actor_id=interaction.user.id,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        reason=reason,
        kind=kind,
    )


async def tell_privately(interaction: discord.Interaction[Any], reason: str) -> None:
    """`reason` as an ephemeral answer (or follow-up, removing a public "thinking" reply)."""
    message = f"⚠️ {reason}"
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(message, ephemeral=True)
        else:
            await interaction.followup.send(message, ephemeral=True)
            await interaction.delete_original_response()
    except discord.HTTPException as error:
        log.warning("could not tell the member about a refusal: %s", error)
