"""`atelier usage` and `atelier audit` print the reports in the terminal."""

from __future__ import annotations

import subprocess
import sys

from tests.stores import Stores

REPORT_TIMEOUT = 60


def atelier(stores: Stores, *args: str) -> subprocess.CompletedProcess[str]:
    config = stores.config.storage.data_dir.parent / "config.toml"
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=REPORT_TIMEOUT,
    )


async def test_usage_prints_top_members_and_the_daily_series(seeded: Stores) -> None:
    done = atelier(seeded, "usage", "--since", "7d")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "Top members, last 7 days"
    assert [line.split()[0] for line in lines[3:6]] == ["ben", "ann", "cy"]
    assert lines[-1].split() == ["total", "8", "51.0", "0.51", "6.0"]

    one = atelier(seeded, "usage", "--since", "36h", "--user", "100")
    assert one.returncode == 0, one.stderr
    assert one.stdout.splitlines()[0] == "Top members, last 36 hours"
    assert one.stdout.splitlines()[3].split()[:2] == ["ann", "100"]


async def test_audit_prints_a_members_entries_filtered_by_action(seeded: Stores) -> None:
    done = atelier(seeded, "audit", "--user", "101", "--action", "job", "--since", "30d")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "Audit entries 1-3 of 3"
    assert [line.split()[3] for line in lines[3:]] == ["job.succeeded", "job.running", "job.queued"]


async def test_a_bad_period_is_refused_in_one_line(seeded: Stores) -> None:
    done = atelier(seeded, "usage", "--since", "week")
    assert done.returncode == 2
    assert "write e.g. 90m, 24h, 7d or 2w" in done.stderr
