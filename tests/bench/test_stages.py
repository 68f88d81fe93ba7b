"""The overhead item's stages: a job's path cut at the server's and the job row's times."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from bench.botrun import Imagined
from bench.items.overhead import STAGES, stages


def stored(monotonic: float) -> str:
    """A time as the job row stores it: naive UTC text."""
    wall = monotonic + time.time() - time.monotonic()
    return datetime.fromtimestamp(wall, UTC).replace(tzinfo=None).isoformat(sep=" ")


def test_stages_cut_the_path_at_each_recorded_time_and_add_up() -> None:
    sent = time.monotonic() - 10.0
    run = Imagined(
        interaction_id=1, sent_at=sent, deferred_at=sent + 0.010, replied_at=sent + 1.000
    )
    row: dict[str, object] = {
        "created_at": stored(sent + 0.030),
        "started_at": stored(sent + 0.045),
        "finished_at": stored(sent + 0.950),
    }
    cut = stages(run, row, gpu_seconds=0.880)
    assert list(cut) == list(STAGES)
    expected = {
        "door": 0.010,
        "queueing": 0.020,
        "claim": 0.015,
        "engine_outside_compute": 0.025,
        "delivery": 0.050,
    }
    assert cut == pytest.approx(expected, abs=0.002)
    assert sum(cut.values()) + 0.880 == pytest.approx(run.seconds, abs=0.002)
