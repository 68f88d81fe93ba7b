"""/admin: usage, quotas, bans, blocklist, audit, queue, export, models and status, for
admins only.

Discord hides the group from members without Manage Server (its default
permissions), and every call is checked again here, because a server's own
settings can hand the command to anyone, and anyone can make a server and
invite a public bot. The check is the cog's `interaction_check`: discord.py
runs it for every command bound to the cog, nested groups included, so a
subcommand added later cannot skip it. It decides the caller's reach
(bot.admin_reach: everywhere for the bot's owners and `[admin]` ids, their own
server for its managers) and refuses an action beyond it; each command then
reads and changes only what that reach covers. Every answer is ephemeral; every
call leaves an audit entry, refusals included.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from ...admin_reach import AdminReach, AdminScope
from ...config import fold_term
from ...core.door import Origin
from ...core.views import JobNotFound, QuotaScope, utcnow
from ...ops.status import StatusFacts
from ...quota import Limits
from ...reports.table import code_block, render
from ..common import Services, actor_of, admin_scope, cancel_and_answer, refuse

AUDIT_PAGE = 15
STATUS_CHART = "status.png"
MAX_TERM_LENGTH = 100
# Where interaction_check leaves the caller's scope for the command it let through.
_SCOPE = "admin_scope"
NOT_ADMIN = "This command is for the bot's admins."
BEYOND_SERVER = (
    "Only the bot's owner can do that, as it reaches beyond this server; you can manage"
    " this server's own blocklist, usage, audit and queue."
)


def _subject(target: discord.User | discord.Member | discord.Role) -> tuple[QuotaScope, int]:
    scope = QuotaScope.ROLE if isinstance(target, discord.Role) else QuotaScope.USER
    return scope, target.id


def _limits_text(limits: Limits | None, currency: str) -> str:
    if limits is None:
        return "no override (inherits the role or config default)"

    def show(value: float | None, unit: str = "") -> str:
        return "unlimited" if value is None else f"{value:g}{unit}"

    return (
        f"images/day {show(limits.images_per_day)} · GPU s/day {show(limits.gpu_seconds_per_day)}"
        f" · cost/day {show(limits.cost_per_day, ' ' + currency)}"
        f" · queued at once {show(limits.jobs_queued)}"
    )


@app_commands.default_permissions(manage_guild=True)
@app_commands.guild_only()
class AdminCog(commands.GroupCog, group_name="admin", group_description="Atelier admin console"):
    """The /admin commands; `interaction_check` is the server-side admin check."""

    quota = app_commands.Group(name="quota", description="Per-member and per-role limits")
    blocklist = app_commands.Group(
        name="blocklist", description="Words and phrases prompts may not use"
    )

    def __init__(self, bot: commands.Bot, services: Services) -> None:
        self.bot = bot
        self.services = services
        super().__init__()

    async def interaction_check(self, interaction: discord.Interaction[Any]) -> bool:
        command = interaction.command.qualified_name if interaction.command else "admin"
        action = command.replace(" ", ".")
        scope = self.scope_of(interaction)
        options = _options(interaction)
        name = action.removeprefix("admin.")
        if scope.allows(name, everywhere=bool(options.get("everywhere"))):
            interaction.extras[_SCOPE] = scope
            await self.services.audit.record_command(
                actor_of(interaction), action, params={**options, "reach": scope.reach.name}
            )
            return True
        reason = NOT_ADMIN if scope.reach is AdminReach.NONE else BEYOND_SERVER
        await refuse(interaction, self.services.store, action, reason)
        return False

    def scope_of(self, interaction: discord.Interaction[Any]) -> AdminScope:
        return admin_scope(self.bot, self.services.config, interaction)

    @app_commands.command(description="Top members and a daily chart of usage")
    @app_commands.describe(user="Only this member", days="How many days back (default 7)")
    async def usage(
        self,
        interaction: discord.Interaction,
        user: discord.User | None = None,
        days: app_commands.Range[int, 1, 366] = 7,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        reports = self.services.reports
        period = timedelta(days=days)
        user_id = user.id if user else None
        guild_id = _scope(interaction).only_guild
        table = await reports.usage_table(period, user_id, guild_id=guild_id)
        chart = await reports.usage_chart(period, user_id, guild_id=guild_id)
        await interaction.edit_original_response(
            content=code_block(table), attachments=[discord.File(io.BytesIO(chart), "usage.png")]
        )

    @app_commands.command(description="Refuse a member's commands, with a reason")
    async def ban(self, interaction: discord.Interaction, user: discord.User, reason: str) -> None:
        await self.services.users.ban(user.id, reason, actor_of(interaction))
        await interaction.response.send_message(
            f"🚫 {user.mention} is banned: {reason}", ephemeral=True
        )

    @app_commands.command(description="Lift a member's ban")
    async def unban(
        self, interaction: discord.Interaction, user: discord.User, reason: str = ""
    ) -> None:
        lifted = await self.services.users.unban(user.id, actor_of(interaction), reason)
        text = (
            f"✅ {user.mention} may use the bot again."
            if lifted
            else (f"{user.mention} was not banned.")
        )
        await interaction.response.send_message(text, ephemeral=True)

    @app_commands.command(description="The audit log, newest first")
    @app_commands.describe(
        user="By or about this member",
        action="An action or family, e.g. job or quota.set",
        days="How many days back",
    )
    async def audit(
        self,
        interaction: discord.Interaction,
        user: discord.User | None = None,
        action: str | None = None,
        days: app_commands.Range[int, 1, 3660] | None = None,
    ) -> None:
        pages = AuditPages(
            self.services,
            interaction.user.id,
            user.id if user else None,
            action,
            timedelta(days=days) if days else None,
            _scope(interaction).only_guild,
        )
        await interaction.response.send_message(await pages.render(), view=pages, ephemeral=True)

    @app_commands.command(description="Queued and running jobs; cancel any of them")
    async def queue(self, interaction: discord.Interaction) -> None:
        scope = _scope(interaction)
        jobs = [
            job for job in await self.services.store.unfinished() if scope.covers_job(job.guild_id)
        ]
        if not jobs:
            await interaction.response.send_message("The queue is empty.", ephemeral=True)
            return
        now = utcnow()
        rows = [
            [
                job.id,
                str(job.state),
                f"<@{job.user_id}>"[:24],
                str(job.user_id),
                f"{(now - job.created_at).total_seconds() / 60:.0f} min",
                job.model,
            ]
            for job in jobs
        ]
        table = render(["job", "state", "owner", "owner id", "age", "model"], rows)
        view = QueueView(self.services, self.scope_of, [job.id for job in jobs][:25])
        await interaction.response.send_message(code_block(table), view=view, ephemeral=True)

    @app_commands.command(description="Usage ledger and audit log as CSV files")
    async def export(
        self, interaction: discord.Interaction, days: app_commands.Range[int, 1, 3660] = 30
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        reports = self.services.reports
        period = timedelta(days=days)
        guild_id = _scope(interaction).only_guild
        files = [
            discord.File(
                io.BytesIO(await reports.usage_csv(period, guild_id=guild_id)), "usage.csv"
            ),
            discord.File(io.BytesIO(await reports.audit_csv(period, guild_id)), "audit.csv"),
        ]
        await interaction.edit_original_response(
            content=f"Usage and audit of the last {days} day(s).", attachments=files
        )

    @app_commands.command(description="Configured models, which are loaded, memory use")
    async def models(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        loaded: dict[str, list[str]] = {}
        lines = []
        for device, status in await self.services.jobs.engine_status():
            if status is None:
                lines.append(f"{device}: engine not running (it starts with the next job)")
                continue
            for model in status.loaded:
                loaded.setdefault(model.name, []).append(
                    f"{device} ({model.family}, {model.memory_bytes / 2**30:.2f} GiB)"
                )
            if status.memory_total_bytes:
                used = (status.memory_used_bytes or 0) / 2**30
                lines.append(f"{device}: {used:.1f} of {status.memory_total_bytes / 2**30:.1f} GiB")
        rows = [
            [
                name,
                spec.source[-40:],
                f"{spec.width}x{spec.height}",
                spec.sampler,
                ", ".join(sorted(spec.controlnets)) or "-",
                "; ".join(loaded.get(name, ["no"])),
            ]
            for name, spec in sorted(self.services.config.models.items())
        ]
        table = render(["model", "source", "size", "sampler", "controlnets", "loaded"], rows)
        await interaction.edit_original_response(content=code_block("\n".join([table, *lines])))

    @app_commands.command(description="Queue, last hour, engines, recent failures, 24 h chart")
    async def status(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        report = self.services.status
        if report is None:
            await interaction.edit_original_response(content="Status is not available here.")
            return
        facts = await report.facts()
        chart = await report.chart(facts.hourly)
        await interaction.edit_original_response(
            embed=status_embed(facts),
            attachments=[discord.File(io.BytesIO(chart), STATUS_CHART)],
        )

    @blocklist.command(name="add", description="Refuse prompts containing a word or phrase")
    @app_commands.describe(
        term="A word or phrase; disguised spellings (g0re, g o r e, gorë) are caught too",
        everywhere="In every server the bot is in, not just this one",
    )
    async def blocklist_add(
        self,
        interaction: discord.Interaction,
        term: app_commands.Range[str, 1, MAX_TERM_LENGTH],
        everywhere: bool = False,
    ) -> None:
        term = fold_term(term)
        if not term:
            await interaction.response.send_message("The term is empty.", ephemeral=True)
            return
        added = await self.services.guilds.block(term, actor_of(interaction), everywhere)
        where = "in every server" if everywhere else "in this server"
        text = (
            f"Prompts containing `{term}` are refused {where}."
            if added
            else (f"`{term}` was already blocked {where}.")
        )
        await interaction.response.send_message(text, ephemeral=True)

    @blocklist.command(name="remove", description="Allow a blocked word or phrase again")
    @app_commands.describe(everywhere="Remove the term blocked in every server")
    async def blocklist_remove(
        self,
        interaction: discord.Interaction,
        term: app_commands.Range[str, 1, MAX_TERM_LENGTH],
        everywhere: bool = False,
    ) -> None:
        term = fold_term(term)
        removed = await self.services.guilds.unblock(term, actor_of(interaction), everywhere)
        if removed:
            text = f"`{term}` is allowed again {'everywhere' if everywhere else 'here'}."
        elif term in self.services.config.moderation.blocklist:
            text = f"`{term}` is blocked by the config file (`[moderation] blocklist`)."
        else:
            text = f"`{term}` was not blocked {'everywhere' if everywhere else 'here'}."
        await interaction.response.send_message(text, ephemeral=True)

    @blocklist.command(name="list", description="The words and phrases prompts may not use here")
    async def blocklist_list(self, interaction: discord.Interaction) -> None:
        configured = self.services.config.moderation.blocklist
        entries = await self.services.guilds.blocked_entries(interaction.guild_id)
        rows = [[term, "everywhere (config file)"] for term in configured] + [
            [term, "everywhere" if everywhere else "this server"] for term, everywhere in entries
        ]
        if not rows:
            await interaction.response.send_message("No term is blocked here.", ephemeral=True)
            return
        table = render(["term", "where"], rows)
        await interaction.response.send_message(
            f"{len(rows)} blocked term(s):\n{code_block(table, 1900)}", ephemeral=True
        )

    @quota.command(description="A member's limits and usage today, or a role's override")
    async def show(
        self, interaction: discord.Interaction, target: discord.Member | discord.User | discord.Role
    ) -> None:
        scope, subject = _subject(target)
        currency = self.services.quotas.rules.pricing.currency
        override = _limits_text(await self.services.quotas.policy(scope, subject), currency)
        text = f"**{target.mention}** override: {override}"
        if scope is QuotaScope.USER:
            roles = [role.id for role in getattr(target, "roles", [])]
            status = await self.services.quotas.status(subject, roles)
            text += f"\nEffective: {_limits_text(status.limits, currency)}\n{status.message()}"
        await interaction.response.send_message(text, ephemeral=True)

    @quota.command(description="Set a member's or role's limits (unset = inherit)")
    async def set(
        self,
        interaction: discord.Interaction,
        target: discord.Member | discord.User | discord.Role,
        images_per_day: app_commands.Range[int, 0] | None = None,
        gpu_seconds_per_day: app_commands.Range[float, 0.0] | None = None,
        cost_per_day: app_commands.Range[float, 0.0] | None = None,
        jobs_queued: app_commands.Range[int, 1] | None = None,
    ) -> None:
        scope, subject = _subject(target)
        limits = Limits(images_per_day, gpu_seconds_per_day, cost_per_day, jobs_queued)
        await self.services.quotas.set_policy(scope, subject, limits, actor_of(interaction))
        currency = self.services.quotas.rules.pricing.currency
        await interaction.response.send_message(
            f"Quota for {target.mention}: {_limits_text(limits, currency)}", ephemeral=True
        )

    @quota.command(description="Drop a member's or role's override")
    async def reset(
        self, interaction: discord.Interaction, target: discord.Member | discord.User | discord.Role
    ) -> None:
        scope, subject = _subject(target)
        dropped = await self.services.quotas.reset_policy(scope, subject, actor_of(interaction))
        text = "override removed" if dropped else "had no override"
        await interaction.response.send_message(f"{target.mention}: {text}.", ephemeral=True)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def status_embed(facts: StatusFacts) -> discord.Embed:
    """The /admin status embed: the same facts as /metrics, in words."""
    hour = facts.hour
    embed = discord.Embed(title="Atelier status", colour=discord.Colour.blurple())
    lanes = " · ".join(f"{lane} {count}" for lane, count in facts.queue.items())
    embed.add_field(name="Queue", value=f"{lanes} · running {facts.running}", inline=False)
    rate = "-" if hour.success_rate is None else f"{hour.success_rate:.1%}"
    embed.add_field(
        name="Last hour",
        value=f"{hour.finished} jobs finished, {hour.images} images"
        f" ({hour.images / 60:.2f}/min); success rate {rate}"
        f" ({hour.succeeded} succeeded, {hour.failed} failed)",
        inline=False,
    )
    p50, p95 = hour.wait_percentile(50), hour.wait_percentile(95)
    embed.add_field(
        name="Queue wait (last hour)",
        value=f"p50 {_seconds(p50)} · p95 {_seconds(p95)}",
        inline=False,
    )
    for engine in facts.engines:
        embed.add_field(
            name=f"Engine {engine.device}", value=engine.describe()[:1024], inline=False
        )
    failures = "\n".join(
        f"`{f.job_id}` {discord.utils.format_dt(f.finished_at, 'R') if f.finished_at else ''}"
        f" {f.model}: {f.error[:80]}"
        for f in facts.failures
    )
    embed.add_field(name="Last failures", value=failures[:1024] or "none", inline=False)
    embed.set_image(url=f"attachment://{STATUS_CHART}")
    embed.set_footer(text="Chart: queue depth at each hour and throughput, last 24 hours (UTC)")
    return embed


def _scope(interaction: discord.Interaction) -> AdminScope:
    """The scope interaction_check decided for this call. A command reached some other
    way (none should be) fails closed: it is stopped, not answered with every server's
    rows."""
    scope = interaction.extras.get(_SCOPE)
    if not isinstance(scope, AdminScope) or scope.reach is AdminReach.NONE:
        raise app_commands.CheckFailure("an /admin command ran without its admin check")
    return scope


def _options(interaction: discord.Interaction) -> dict[str, Any]:
    """The options an admin gave, as plain values for the audit entry."""
    values: dict[str, Any] = {}
    for name, value in interaction.namespace.__dict__.items():
        values[name] = getattr(value, "id", value)
    return values


class AuditPages(discord.ui.View):
    """Previous/next buttons over an audit query; only its admin can page."""

    def __init__(
        self,
        services: Services,
        owner_id: int,
        user_id: int | None,
        action: str | None,
        period: timedelta | None,
        guild_id: int | None,
    ) -> None:
        """`guild_id`: only that server's entries (a server's manager); None: all."""
        super().__init__(timeout=600)
        self.services = services
        self._owner_id = owner_id
        self._query = (user_id, action, period)
        self._guild_id = guild_id
        self.offset = 0

    async def render(self) -> str:
        reports = self.services.reports
        user_id, action, period = self._query
        days = None if period is None else period / timedelta(days=1)
        page = await reports.audit.query(
            user_id, action, days, self.offset, AUDIT_PAGE, guild_id=self._guild_id
        )
        self.previous.disabled = self.offset == 0
        self.next.disabled = self.offset + AUDIT_PAGE >= page.total
        first, last = self.offset + 1, min(self.offset + AUDIT_PAGE, page.total)
        header = f"Audit entries {first}-{last} of {page.total}" if page.total else "No entries."
        table = await reports.audit_table(
            user_id, action, period, self.offset, AUDIT_PAGE, guild_id=self._guild_id
        )
        return f"{header}\n{code_block(table, 1900)}"

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return interaction.user.id == self._owner_id

    async def _turn(self, interaction: discord.Interaction, step: int) -> None:
        self.offset = max(0, self.offset + step)
        await self.services.audit.record_command(
            actor_of(interaction), "admin.audit.page", params={"offset": self.offset}
        )
        await interaction.response.edit_message(content=await self.render(), view=self)

    @discord.ui.button(label="◀ Newer", style=discord.ButtonStyle.secondary)
    async def previous(
        self, interaction: discord.Interaction, button: discord.ui.Button[AuditPages]
    ) -> None:
        await self._turn(interaction, -AUDIT_PAGE)

    @discord.ui.button(label="Older ▶", style=discord.ButtonStyle.secondary)
    async def next(
        self, interaction: discord.Interaction, button: discord.ui.Button[AuditPages]
    ) -> None:
        await self._turn(interaction, AUDIT_PAGE)


class QueueView(discord.ui.View):
    """A menu of the listed jobs; choosing one cancels it, if the chooser's scope covers
    the job (their server's, or any for a global admin)."""

    def __init__(
        self,
        services: Services,
        scope_of: Callable[[discord.Interaction[Any]], AdminScope],
        job_ids: list[str],
    ) -> None:
        super().__init__(timeout=600)
        self.services = services
        self._scope_of = scope_of
        self._menu: discord.ui.Select[QueueView] = discord.ui.Select(
            placeholder="Cancel a job…",
            options=[discord.SelectOption(label=job_id) for job_id in job_ids],
        )
        self._menu.callback = self._cancel  # type: ignore[method-assign]
        self.add_item(self._menu)

    async def _cancel(self, interaction: discord.Interaction) -> None:
        store, job_id = self.services.store, self._menu.values[0]
        scope = self._scope_of(interaction)
        try:
            job = await store.get(job_id)
        except JobNotFound:
            await refuse(interaction, store, "admin.queue.cancel", "That job is no longer stored.")
            return
        if not (scope.allows("queue.cancel") and scope.covers_job(job.guild_id)):
            reason = NOT_ADMIN if scope.reach is AdminReach.NONE else BEYOND_SERVER
            await refuse(interaction, store, "admin.queue.cancel", reason)
            return
        await cancel_and_answer(
            self.services, interaction, job, "admin.queue.cancel", Origin.BUTTON
        )
