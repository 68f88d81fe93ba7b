"""What every cog shares: the services it is given, who is asking, their admin scope, refusals."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import discord
from discord import app_commands
from discord.ext import commands

from engine.protocol import Family, LoraSpec

from ..admin_reach import Admins, AdminScope, Asker
from ..config import Config
from ..core import Core
from ..core.acting import Acting
from ..core.door import Door, Origin
from ..core.refusals import Refusal
from ..core.services import (
    ApiKeyStore,
    AuditLog,
    CommandStore,
    GuildStore,
    JobStore,
    QuotaStore,
    UserStore,
)
from ..core.views import Actor, Job, JobState, NewCommand, ReceivedCommand, Requester
from ..jobs.service import JobService
from ..moderation.service import Moderation
from ..ops.status import StatusReport
from ..reports.console import AdminReports
from .delivery import Delivery
from .refusals import sentence
from .webhooks import ORIGINAL, interaction_webhook

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
    commands: CommandStore
    keys: ApiKeyStore
    moderation: Moderation
    core: Core
    # /admin status (bot.ops); None where no operations service was built (tests).
    status: StatusReport | None = None

    @property
    def door(self) -> Door:
        return self.core.door

    @property
    def acting(self) -> Acting:
        return self.core.acting

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
    return Requester.on_discord(
        user_id=interaction.user.id,
        user_name=interaction.user.name,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        role_ids=roles_of(interaction),
        interaction_id=interaction.id,
        interaction_token=interaction.token,
        upload_limit=interaction.filesize_limit,
        nsfw_channel=age_restricted(interaction.channel),
    )


def age_restricted(channel: object) -> bool:
    """Whether Discord marks the channel age-restricted (a thread: its parent); a DM
    or a channel the bot cannot see is not."""
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


# Discord allows 3 s from an interaction's creation to its first answer: the deferral
# goes out by this long after it, first if the journal write is still running then (a
# slow disk, or checks before it that took the time).
DISCORD_ANSWER_WITHIN = 3.0
DEFER_BY = 2.0
# The journal's time when this machine's clock and Discord's disagree (an interaction
# created in the future, or older than Discord would still take an answer for): its
# age is then unknown.
UNKNOWN_AGE_BUDGET = 1.0


def journal_budget(interaction: discord.Interaction[Any]) -> float:
    """How long the journal write may take before the deferral goes first: what is left of
    DEFER_BY since Discord created the interaction (its id's time), or
    UNKNOWN_AGE_BUDGET where the clocks disagree."""
    age = (discord.utils.utcnow() - interaction.created_at).total_seconds()
    if not 0.0 <= age <= DISCORD_ANSWER_WITHIN:
        return UNKNOWN_AGE_BUDGET
    return max(0.0, DEFER_BY - age)


async def journal_then_defer(
    services: Services,
    interaction: discord.Interaction[Any],
    command: str,
    options: dict[str, Any],
    ephemeral: bool = False,
) -> Requester:
    """Write the command to the journal (one short insert), then defer (privately with
    `ephemeral`); if the database is slow, defer first and write right after. The
    requester returned carries the journal row to settle when the job is queued. A
    failed write is logged and the command handled anyway, only without the journal's
    protection."""
    requester = requester_of(interaction)
    row = NewCommand(
        interaction_id=interaction.id,
        command=command,
        user_id=requester.user_id,
        user_name=requester.user_name,
        guild_id=requester.guild_id,
        channel_id=requester.channel_id,
        token=interaction.token,
        options=options,
        role_ids=list(requester.role_ids),
        upload_limit=requester.upload_limit,
    )
    budget = journal_budget(interaction)
    write = asyncio.ensure_future(services.commands.receive(row))
    done, _ = await asyncio.wait({write}, timeout=budget)
    if not done:
        log.warning("journal write slower than %.2f s; deferring first", budget)
    await interaction.response.defer(thinking=True, ephemeral=ephemeral)
    try:
        await write
    except Exception:
        log.exception("could not journal %s %s; handling it unjournaled", command, interaction.id)
        return requester
    return dataclasses.replace(requester, command_id=interaction.id)


def requester_from_journal(row: ReceivedCommand) -> Requester:
    """The requester of a journaled command, to complete it after a restart."""
    return Requester.on_discord(
        user_id=row.user_id,
        user_name=row.user_name,
        guild_id=row.guild_id,
        channel_id=row.channel_id,
        role_ids=row.role_ids,
        interaction_id=row.interaction_id,
        interaction_token=row.token,
        upload_limit=row.upload_limit,
        command_id=row.interaction_id,
    )


@contextlib.asynccontextmanager
async def settled_on_error(services: Services, row: ReceivedCommand) -> AsyncIterator[None]:
    """Completing a journaled command at start: an unexpected error is logged and the
    command settled, so one bad command cannot fail every start after it."""
    try:
        yield
    except Exception:
        log.exception("could not complete %s %s; dropping it", row.command, row.interaction_id)
        await services.commands.settle(row.interaction_id, "failed: internal error")


def admin_scope(
    bot: commands.Bot, config: Config, interaction: discord.Interaction[Any]
) -> AdminScope:
    """What the member may administer here (bot.admin_reach): everywhere for the
    application's owner or team (the bot's `owner_ids`, read from Discord at start) and the
    `[admin]` ids, this server for a holder of Manage Server, nothing otherwise."""
    owners = {*(bot.owner_ids or ()), *([bot.owner_id] if bot.owner_id else [])}
    admins = Admins.of(
        owners, config.admin.user_ids, config.admin.role_ids, config.discord.allowed_guild_ids
    )
    # Discord's own answer for the member in this channel, which needs no cached copy of
    # the server; Manage Server is not among the permissions a channel overwrite may set
    # (Discord's permissions table gives it no channel type), so it is the server's.
    manages = interaction.guild_id is not None and interaction.permissions.manage_guild
    asker = Asker(interaction.user.id, interaction.guild_id, tuple(roles_of(interaction)), manages)
    return AdminScope.of(admins, asker)


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


async def cancel_and_answer(
    services: Services,
    interaction: discord.Interaction[Any],
    job: Job,
    command: str,
    origin: Origin,
) -> None:
    """Cancel a job the member may cancel and say privately what happened. A running job
    stops within a step: the answer waits for its end, so it says what happened (a job
    whose result was already on its way finished instead, and a refusal is audited)."""
    await interaction.response.defer(ephemeral=True, thinking=True)
    member = requester_of(interaction)
    ended = await services.acting.cancel(job, member)
    if isinstance(ended, Refusal):
        await tell_privately(interaction, sentence(ended))
        await services.door.refused(member, command, origin, ended)
    elif ended.state is JobState.CANCELLED:
        await interaction.followup.send(f"🛑 Job `{job.id}` is cancelled.", ephemeral=True)
    else:
        await interaction.followup.send(
            f"🛑 Cancelling job `{job.id}`: it stops at its next step.", ephemeral=True
        )


async def tell_privately(interaction: discord.Interaction[Any], reason: str) -> None:
    """`reason` as an ephemeral answer (or follow-up, removing a public "thinking" reply)."""
    message = f"⚠️ {reason}"
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(message, ephemeral=True)
        else:
            with contextlib.suppress(discord.NotFound):
                await interaction.delete_original_response()
            await interaction.followup.send(message, ephemeral=True)
    except discord.HTTPException as error:
        log.warning("could not tell the member about a refusal: %s", error)


class Reply(Protocol):
    """Where a command's answers go: an interaction's deferred reply (Followup) or the
    bot's reply to a member's message (bot.discord.cogs.imagine)."""

    async def refuse(self, reason: str) -> None:
        """Tell the member why nothing was queued (privately where possible)."""

    async def notice(self, text: str) -> None:
        """A side note for the member (how an attachment was read)."""

    async def placeholders(self, count: int) -> list[int | None]:
        """One message per job of the command, made before the jobs are queued, so each
        job's updates edit its own message; None: the interaction's original reply."""

    async def discard(self, message_ids: list[int | None]) -> None:
        """Remove placeholders of jobs that were not queued after all."""


class Followup:
    """Answers after a deferral, through the interaction's webhook: the same for a live
    interaction and for a journaled one completed after a restart (while its token lives).

    `ephemeral`: the deferral was private, so are the follow-ups."""

    def __init__(self, client: discord.Client, token: str, ephemeral: bool = False) -> None:
        self.webhook = interaction_webhook(client, token)
        self.ephemeral = ephemeral

    @classmethod
    def of(cls, interaction: discord.Interaction[Any], ephemeral: bool = False) -> Followup:
        return cls(interaction.client, interaction.token, ephemeral)

    async def placeholders(self, count: int) -> list[int | None]:
        """The original reply for the first job, a follow-up message for each other."""
        if count == 1:
            return [None]
        # The first follow-up after a deferral would replace the "thinking" reply.
        await self.webhook.edit_message(ORIGINAL, content=f"⏳ Queueing {count} jobs…")
        made: list[int | None] = [None]
        for number in range(2, count + 1):
            message = await self.webhook.send(
                f"⏳ Job {number} of {count}…", wait=True, ephemeral=self.ephemeral
            )
            made.append(message.id)
        return made

    async def discard(self, message_ids: list[int | None]) -> None:
        for message_id in message_ids:
            if message_id is not None:
                with contextlib.suppress(discord.HTTPException):
                    await self.webhook.delete_message(message_id)

    async def refuse(self, reason: str) -> None:
        """`reason` privately, once the public "thinking" reply is removed (Discord makes
        the first follow-up after a public deferral replace it, publicly)."""
        with contextlib.suppress(discord.NotFound):
            await self.webhook.delete_message(ORIGINAL)
        try:
            await self.webhook.send(f"⚠️ {reason}", ephemeral=True)
        except discord.HTTPException as error:
            log.warning("could not tell the member about a refusal: %s", error)

    async def notice(self, text: str) -> None:
        try:
            await self.webhook.send(text, ephemeral=True)
        except discord.HTTPException as error:
            log.warning("could not send a notice: %s", error)


def lora_choices(
    loras: Mapping[str, LoraSpec], family: Family | None, current: str
) -> list[app_commands.Choice[str]]:
    """Autocomplete for a `lora` option (`ink:0.8, glow`): the configured LoRAs of the
    model's `family` (none where it is unknown) containing what was typed after the last
    comma, each offered as the whole option with that name (and any weight typed after it)
    in place of the last part."""
    head, comma, last = current.rpartition(",")
    typed, colon, weight = last.strip().partition(":")
    before = f"{head}{comma} " if comma else ""
    offered = [
        f"{before}{name}{colon}{weight}"[:100]
        for name in sorted(loras)
        if loras[name].family is family and typed.casefold() in name.casefold()
    ]
    return [app_commands.Choice(name=text, value=text) for text in offered][:25]


def model_choices(models: Mapping[str, object], current: str) -> list[app_commands.Choice[str]]:
    """Autocomplete for a `model` option: the configured models containing what was typed
    (Discord shows at most 25)."""
    return [
        app_commands.Choice(name=name, value=name)
        for name in sorted(models)
        if current.lower() in name.lower()
    ][:25]
