"""The benchmark suite's smoke mode runs every item end to end, so the suite cannot rot.

No timing is asserted: only that each item ran and reported its figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ITEMS = ["overhead", "batching", "previews", "bot", "store", "gpu", "cache", "scale"]


@pytest.mark.timeout(1200)  # several engine processes on a shared 2-core machine
def test_smoke_run_reports_every_item_with_ratios_and_their_numbers(tmp_path: Path) -> None:
    # From another folder, this checkout on the path: the suite depends on neither.
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path), "--name", "smoke"],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=path),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-5000:]
    report = json.loads((tmp_path / "smoke.json").read_text())
    assert report["smoke"] is True
    assert {"torch", "diffusers", "discord.py"} <= set(report["versions"])
    assert report["device"] and report["commit"]
    assert [section["item"] for section in report["sections"]] == ITEMS
    for section in report["sections"]:
        assert section["skipped"] is None, section
        assert section["figures"], section
        for figure in section["figures"]:
            assert figure["ratio"] is None or figure["ratio"] > 0, figure
            assert figure["ratio_means"] and figure["values"], figure
    table = (tmp_path / "smoke.md").read_text()
    assert "| item | figure | ratio | absolute numbers | target |" in table
    assert all(f"| {item} |" in table for item in ITEMS)
    assert table in done.stdout
