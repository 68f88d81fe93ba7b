"""The Discord door's rendering of every kind of core refusal: one private sentence, a
time shown as a Discord timestamp in each member's own zone."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.core.refusals import Refusal, RefusalKind
from bot.discord.refusals import sentence

WHEN = datetime(2026, 12, 7, 18, 30, tzinfo=UTC)


@pytest.mark.parametrize("kind", list(RefusalKind))
@pytest.mark.parametrize("timed", [False, True], ids=["no-time", "timed"])
def test_every_kind_renders_as_one_sentence(kind: RefusalKind, timed: bool) -> None:
    reason = "Wait until {until}, then try again." if timed else "Try again later."
    refusal = Refusal(kind=kind, reason=reason, until=WHEN if timed else None, retry_after=5.0)

    text = sentence(refusal)

    seconds = int(WHEN.timestamp())
    if timed:
        assert text == f"Wait until <t:{seconds}:t> (<t:{seconds}:R>), then try again."
    else:
        assert text == "Try again later."
    assert "{until}" not in text and "\n" not in text


def test_member_braces_are_left_alone() -> None:
    """A member's own `{…}` choices in a reason are not a template."""
    refusal = Refusal(kind=RefusalKind.BAD_INPUT, reason="`{a,b}` makes 2 jobs; {until} stays.")
    assert sentence(refusal) == refusal.reason
