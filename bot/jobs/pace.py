"""How fast the queue moves, and the waits estimated from it: the one place that turns the
measured pace of finished jobs into seconds or minutes, for both doors."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

# The pace is measured over this much of the recent past.
PACE_WINDOW = timedelta(hours=1)
# An engine counts as working the queue (a wait's share of the work ahead) while it holds
# a claim's lease or finished a job this recently, on whichever host it runs.
LIVE_WINDOW = timedelta(minutes=5)


@dataclass(frozen=True)
class Pace:
    """Jobs finished per minute over the last PACE_WINDOW, over every engine; 0.0 while
    none finished in it (the bot just started, or the queue was idle)."""

    per_minute: float

    def seconds_per_job(self) -> float | None:
        """About how long a job takes from the queue's side; None before there is a pace."""
        return 60.0 / self.per_minute if self.per_minute else None

    def minutes_to_drain(self, waiting: int) -> int | None:
        """Whole minutes (at least 1) until `waiting` jobs have run; None before there is a
        pace."""
        return max(1, math.ceil(waiting / self.per_minute)) if self.per_minute else None


def seconds_until_done(per_job: float, position: int, left: float = 1.0) -> float:
    """About how long until a job is done, at `per_job` seconds a job: the jobs ahead of it
    (position 1: next, or running) and the part `left` of its own run (1.0 before it
    starts), to a tenth of a second."""
    return round(per_job * (position - 1 + left), 1)
