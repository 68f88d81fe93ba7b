"""`atelier bench` hands its arguments to `python -m bench` in the checkout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_atelier_bench_passes_its_options_to_the_suite() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "bench", "--items", "nope"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "python -m bench: error: argument --items: unknown item nope" in done.stderr
    assert "choose from overhead, batching, previews, bot, store, gpu" in done.stderr


def test_the_bench_is_listed_in_atelier_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "bench" in done.stdout
