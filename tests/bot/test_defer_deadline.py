"""The deferral's deadline: Discord counts its 3 s from the interaction's creation, so the
journal write gets what is left of DEFER_BY, not a fixed budget after the checks."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest

from bot.discord.common import DEFER_BY, UNKNOWN_AGE_BUDGET, journal_budget


@dataclass
class Created:
    created_at: dt.datetime


def made(seconds_ago: float) -> Created:
    return Created(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds_ago))


@pytest.mark.parametrize(
    ("age", "low", "high"),
    [
        (0.0, DEFER_BY - 0.2, DEFER_BY),  # just created: nearly all of it
        (1.5, DEFER_BY - 1.7, DEFER_BY - 1.5),  # slow checks: only the rest
        (2.5, 0.0, 0.0),  # past the deadline: defer at once
        # Clocks that disagree with Discord's (created in the future, or older than
        # Discord still answers): the age is unknown, a short budget.
        (-0.5, UNKNOWN_AGE_BUDGET, UNKNOWN_AGE_BUDGET),
        (30.0, UNKNOWN_AGE_BUDGET, UNKNOWN_AGE_BUDGET),
    ],
)
def test_the_journal_gets_what_is_left_of_the_deadline(age: float, low: float, high: float) -> None:
    assert low <= journal_budget(made(age)) <= high  # type: ignore[arg-type]
