"""The HTTP door's rendering of each kind of the core's Refusal (bot.http.refusals),
derived from the enum, so a new kind fails here until the table renders it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.core.refusals import Refusal, RefusalKind, paused
from bot.http.errors import MEANINGS
from bot.http.refusals import RENDERINGS, api_error

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("kind", list(RefusalKind))
def test_every_refusal_kind_is_a_documented_status_with_its_sentence(kind: RefusalKind) -> None:
    error = api_error(Refusal(kind=kind, reason="Do this instead."), NOW)
    assert (error.status, error.name) == RENDERINGS[kind]
    assert error.status in MEANINGS  # the OpenAPI document says what it means
    assert error.name in MEANINGS[error.status]
    assert error.message == "Do this instead."
    assert error.audited  # the core audited it: the error middleware does not again
    assert "Retry-After" not in error.headers


def test_the_statuses_clients_act_on() -> None:
    assert {kind: RENDERINGS[kind].status for kind in RefusalKind} == {
        RefusalKind.RATE_LIMITED: 429,
        RefusalKind.BANNED: 403,
        RefusalKind.PAUSED: 403,
        RefusalKind.BLOCKED: 403,
        RefusalKind.BAD_INPUT: 400,
        RefusalKind.OVER_QUOTA: 429,
        RefusalKind.QUEUE_FULL: 429,
        RefusalKind.NOT_FOUND: 404,
        RefusalKind.NOT_READY: 409,
        RefusalKind.GONE: 410,
        RefusalKind.NOT_ALLOWED: 403,
        RefusalKind.TOO_LATE: 409,
    }


def test_until_is_written_in_iso_8601_and_retry_after_says_when_to_ask_again() -> None:
    pause = api_error(paused(NOW + timedelta(minutes=30)), NOW)
    assert pause.message == (
        "You are paused until 2030-01-01T12:30:00+00:00 after repeated blocked prompts."
    )
    assert pause.headers["Retry-After"] == "1800"
    limited = Refusal(kind=RefusalKind.RATE_LIMITED, reason="Slow down.", retry_after=2.2)
    assert api_error(limited, NOW).headers["Retry-After"] == "3"
    quota = Refusal(
        kind=RefusalKind.OVER_QUOTA,
        reason="This would go over your daily limit: 0 left. It resets {until}.",
        until=NOW + timedelta(hours=2),
    )
    rendered = api_error(quota, NOW)
    assert rendered.message.endswith("It resets 2030-01-01T14:00:00+00:00.")
    assert rendered.headers["Retry-After"] == "7200"
