"""Reports over a seeded ledger: tables, the daily chart, CSV exports."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from PIL import Image
from sqlalchemy import update

from bot.reports.console import AdminReports
from bot.reports.period import parse_duration
from bot.reports.table import code_block, render
from bot.store.audit import Actor
from bot.store.models import Job
from tests.stores import Stores

from .conftest import JOBS

WEEK = timedelta(days=7)


def reports(stores: Stores) -> AdminReports:
    return AdminReports(stores.sessions, stores.config)


async def test_top_members_table_ranks_by_gpu_time_with_cost_and_relax_share(
    seeded: Stores,
) -> None:
    text = await reports(seeded).usage_table(WEEK)
    lines = text.splitlines()
    assert lines[0] == "Top members, last 7 days"
    assert lines[1].split() == [
        "member",
        "id",
        "jobs",
        "images",
        "GPU",
        "s",
        "cost",
        "EUR",
        "relax",
    ]
    assert [line.split() for line in lines[3:]] == [
        ["ben", "101", "1", "4", "30.0", "0.30", "0%"],
        ["ann", "100", "2", "3", "18.0", "0.18", "33%"],
        ["cy", "102", "1", "1", "3.0", "0.03", "0%"],
    ]
    one = await reports(seeded).usage_table(WEEK, user_id=102)
    assert [line.split()[0] for line in one.splitlines()[3:]] == ["cy"]


async def test_daily_series_covers_every_day_and_sums_to_the_period(seeded: Stores) -> None:
    days = await reports(seeded).daily(WEEK)
    assert len(days) == 8  # today and the seven days before, empty ones included
    assert sum(d.images for d in days) == 8
    assert sum(d.gpu_seconds for d in days) == pytest.approx(51.0)
    assert sum(d.relax_gpu_seconds for d in days) == pytest.approx(6.0)
    table = await reports(seeded).daily_table(WEEK)
    assert table.splitlines()[-1].split() == ["total", "8", "51.0", "0.51", "6.0"]


async def test_the_daily_chart_is_a_png_of_a_sane_size(seeded: Stores) -> None:
    png = await reports(seeded).usage_chart(WEEK)
    with Image.open(io.BytesIO(png)) as image:
        image.verify()
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        assert image.size == (960, 480)
    assert len(png) < 500_000


async def test_usage_csv_parses_and_its_totals_match_the_ledger(seeded: Stores) -> None:
    data = await reports(seeded).usage_csv(timedelta(days=30))
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    assert len(rows) == len(JOBS)
    assert sum(float(r["gpu_seconds"]) for r in rows) == pytest.approx(sum(j[2] for j in JOBS))
    assert sum(int(r["images"]) for r in rows) == sum(j[3] for j in JOBS)
    assert sum(float(r["cost"]) for r in rows) == pytest.approx(sum(j[2] for j in JOBS) / 100)
    assert {r["currency"] for r in rows} == {"EUR"}
    week = await reports(seeded).usage_csv(WEEK)
    assert len(list(csv.DictReader(io.StringIO(week.decode("utf-8-sig"))))) == len(JOBS) - 1


async def test_audit_csv_and_table_show_the_log_newest_first(seeded: Stores) -> None:
    await seeded.audit.record_command(Actor(1, guild_id=5), "admin.export", params={"days": 7})
    data = await reports(seeded).audit_csv(WEEK)
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    assert len(rows) == (await seeded.audit.query(limit=None)).total
    assert (rows[0]["action"], rows[0]["params"]) == ("admin.export", '{"days": 7}')
    text = await reports(seeded).audit_table(action="quota.settle", offset=1, limit=2)
    assert text.splitlines()[0] == f"Audit entries 2-3 of {len(JOBS)}"
    assert len(text.splitlines()) == 2 + 2 + 1  # header line, column line, rule, two rows


async def test_a_servers_reports_hold_only_the_jobs_and_entries_made_in_it(
    seeded: Stores,
) -> None:
    """What a server's manager reads (bot.admin_reach): ann's two jobs were made in server
    7, the others elsewhere; the audit has one entry from each server."""
    async with seeded.sessions.begin() as session:
        await session.execute(update(Job).where(Job.id.in_(["job0", "job1"])).values(guild_id=7))
    await seeded.audit.record_command(Actor(1, guild_id=7), "admin.usage")
    await seeded.audit.record_command(Actor(1, guild_id=8), "admin.usage")
    console = reports(seeded)
    table = await console.usage_table(WEEK, guild_id=7)
    assert [line.split()[0] for line in table.splitlines()[3:]] == ["ann"]
    usage = await console.usage_csv(WEEK, guild_id=7)
    rows = list(csv.DictReader(io.StringIO(usage.decode("utf-8-sig"))))
    assert sorted(row["job_id"] for row in rows) == ["job0", "job1"]
    assert sum(day.images for day in await console.daily(WEEK, guild_id=7)) == 3
    audit = await console.audit_csv(WEEK, guild_id=7)
    entries = list(csv.DictReader(io.StringIO(audit.decode("utf-8-sig"))))
    assert [(e["action"], e["guild_id"]) for e in entries] == [("admin.usage", "7")]
    assert "of 1" in await console.audit_table(guild_id=7)
    assert (await seeded.audit.query(guild_id=8)).total == 1


def test_a_long_table_fits_one_discord_message_cut_at_a_line() -> None:
    text = render(["n", "square"], [[str(n), str(n * n)] for n in range(500)])
    block = code_block(text)
    assert len(block) <= 2000
    assert block.startswith("```\n  n  square\n") and block.endswith("more lines\n```")
    assert code_block("short") == "```\nshort\n```"


@pytest.mark.parametrize(
    ("text", "period"),
    [
        ("7d", timedelta(days=7)),
        ("24h", timedelta(hours=24)),
        ("90m", timedelta(minutes=90)),
        ("2w", timedelta(weeks=2)),
        (" 1.5D ", timedelta(hours=36)),
    ],
)
def test_durations_are_written_as_admins_type_them(text: str, period: timedelta) -> None:
    assert parse_duration(text) == period


@pytest.mark.parametrize("text", ["7", "d", "0d", "-1d", "7 days", ""])
def test_a_bad_duration_says_what_to_write(text: str) -> None:
    with pytest.raises(ValueError, match=r"write e\.g\. 90m, 24h, 7d or 2w"):
        parse_duration(text)
