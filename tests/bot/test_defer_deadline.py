"""The deferral's deadline: Discord counts its 3 s from the interaction's creation, so the
journal write gets what is left of DEFER_BY, not a fixed budget after the checks."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest

from bot.discord.common import DEFER_BY, journal_budget


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
        (-30.0, DEFER_BY, DEFER_BY),  # a clock behind Discord's: never more than DEFER_BY
    ],
)
def test_the_journal_gets_what_is_left_of_the_deadline(age: float, low: float, high: float) -> None:
    assert low <= journal_budget(made(age)) <= high  # type: ignore[arg-type]
