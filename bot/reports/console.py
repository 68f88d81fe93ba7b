"""The admin console's reports, rendered once for Discord and the terminal alike.

Each report takes `guild_id`: only that server's rows (what a server's manager may
read, bot.admin_reach); None: every server's (the owner, the terminal)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..config import Config
from ..store.audit import AuditLog, AuditPage
from ..store.models import utcnow
from . import export, table
from .usage import DayUsage, MemberUsage, UsageQueries

# Longest params text shown in an audit table row; the CSV export has all of it.
PARAMS_CHARS = 48


class AdminReports:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], config: Config) -> None:
        self.usage = UsageQueries(sessions, config.quota.zone)
        self.audit = AuditLog(sessions)
        self.currency = config.billing.currency

    async def usage_table(
        self,
        period: timedelta,
        user_id: int | None = None,
        limit: int = 10,
        guild_id: int | None = None,
    ) -> str:
        """Top members of the period (or one member): images, GPU seconds, cost, relax share."""
        since = utcnow() - period
        members = await self.usage.top_users(since, limit, user_id, guild_id)
        return render_members(members, self.currency, _describe(period))

    async def daily_table(self, period: timedelta, user_id: int | None = None) -> str:
        return render_days(await self.daily(period, user_id), self.currency)

    async def daily(
        self, period: timedelta, user_id: int | None = None, guild_id: int | None = None
    ) -> list[DayUsage]:
        now = utcnow()
        return await self.usage.daily(now - period, now, user_id, guild_id)

    async def usage_chart(
        self, period: timedelta, user_id: int | None = None, guild_id: int | None = None
    ) -> bytes:
        """PNG bytes of the daily usage chart."""
        # matplotlib weighs ~30 MB and a good part of a second at start: loaded the
        # first time an admin asks for a chart, not by every bot (bench, item bot).
        from . import chart

        who = f"member {user_id}" if user_id is not None else "all members"
        where = "" if guild_id is None else " in this server"
        title = f"Usage over the last {_describe(period)} ({who}{where})"
        return chart.daily_usage_png(await self.daily(period, user_id, guild_id), title)

    async def usage_csv(
        self, period: timedelta, user_id: int | None = None, guild_id: int | None = None
    ) -> bytes:
        return export.usage_csv(await self.usage.entries(utcnow() - period, user_id, guild_id))

    async def audit_csv(self, period: timedelta, guild_id: int | None = None) -> bytes:
        days = period / timedelta(days=1)
        page = await self.audit.query(days=days, limit=None, guild_id=guild_id)
        return export.audit_csv(page.entries)

    async def audit_table(
        self,
        user_id: int | None = None,
        action: str | None = None,
        period: timedelta | None = None,
        offset: int = 0,
        limit: int = 20,
        guild_id: int | None = None,
    ) -> str:
        days = None if period is None else period / timedelta(days=1)
        page = await self.audit.query(user_id, action, days, offset, limit, guild_id)
        return render_audit(page)


def render_members(members: list[MemberUsage], currency: str, period: str) -> str:
    if not members:
        return f"No usage in the last {period}."
    rows = [
        [
            m.name,
            str(m.user_id),
            str(m.jobs),
            str(m.images),
            f"{m.gpu_seconds:.1f}",
            f"{m.cost:.2f}",
            f"{m.relax_share:.0%}",
        ]
        for m in members
    ]
    headers = ["member", "id", "jobs", "images", "GPU s", f"cost {currency}", "relax"]
    return f"Top members, last {period}\n" + table.render(headers, rows)


def render_days(days: list[DayUsage], currency: str) -> str:
    rows = [
        [
            d.day.isoformat(),
            str(d.images),
            f"{d.gpu_seconds:.1f}",
            f"{d.cost:.2f}",
            f"{d.relax_gpu_seconds:.1f}",
        ]
        for d in days
    ]
    total = [
        "total",
        str(sum(d.images for d in days)),
        f"{sum(d.gpu_seconds for d in days):.1f}",
        f"{sum(d.cost for d in days):.2f}",
        f"{sum(d.relax_gpu_seconds for d in days):.1f}",
    ]
    headers = ["day", "images", "GPU s", f"cost {currency}", "relax GPU s"]
    return table.render(headers, [*rows, total])


def render_audit(page: AuditPage) -> str:
    if not page.entries:
        return "No audit entries match."
    rows = [
        [
            _when(e.at),
            str(e.actor_id or "-"),
            e.action,
            e.target or "-",
            e.outcome,
            _short(json.dumps(e.params, sort_keys=True, separators=(",", ":"))),
        ]
        for e in page.entries
    ]
    first = page.offset + 1
    header = f"Audit entries {first}-{page.offset + len(page.entries)} of {page.total}"
    columns = ["time (UTC)", "actor", "action", "target", "outcome", "params"]
    return header + "\n" + table.render(columns, rows)


def _when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S")


def _short(text: str) -> str:
    return text if len(text) <= PARAMS_CHARS else text[: PARAMS_CHARS - 1] + "…"


def _describe(period: timedelta) -> str:
    hours = period / timedelta(hours=1)
    amount, unit = (hours / 24, "day") if hours % 24 == 0 else (hours, "hour")
    return f"{amount:g} {unit}" + ("" if amount == 1 else "s")
