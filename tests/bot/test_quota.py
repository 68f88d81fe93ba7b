"""Quota arithmetic, pure: overrides, which limit a job breaks, when days reset."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from bot.quota import Estimate, Limits, Usage, check, day_bounds, effective_limits, summary

DEFAULT = Limits(images_per_day=10, gpu_seconds_per_day=100.0, jobs_queued=2)
MIDNIGHT = datetime(2026, 11, 24, tzinfo=UTC)


def test_of_several_roles_each_limit_takes_its_most_generous_value() -> None:
    member = Limits(images_per_day=20)
    patron = Limits(gpu_seconds_per_day=None, jobs_queued=5, images_per_day=15)
    limits = effective_limits(DEFAULT, [member, patron], None)
    assert limits == Limits(images_per_day=20, gpu_seconds_per_day=100.0, jobs_queued=5)


def test_a_user_override_beats_roles_and_inherits_what_it_leaves_unset() -> None:
    limits = effective_limits(DEFAULT, [Limits(images_per_day=50)], Limits(images_per_day=3))
    assert limits == Limits(images_per_day=3, gpu_seconds_per_day=100.0, jobs_queued=2)


def test_check_names_the_first_limit_broken_and_what_is_left() -> None:
    job = Estimate(images=2, gpu_seconds=30.0, cost=0.0)
    assert check(DEFAULT, Usage(images=8, gpu_seconds=70.0), job, MIDNIGHT, "EUR") is None
    over = check(DEFAULT, Usage(images=9), job, MIDNIGHT, "EUR")
    assert over is not None and over.left == "1 left today, this job needs 2"
    over = check(DEFAULT, Usage(images=0, gpu_seconds=80.0), job, MIDNIGHT, "EUR")
    assert over is not None and over.limit == "daily limit of 100 GPU seconds"
    over = check(DEFAULT, Usage(jobs_queued=2), job, MIDNIGHT, "EUR")
    assert over is not None and over.resets_at is None
    assert over.message().endswith("Wait for one of your jobs to finish.")


def test_the_quota_day_follows_the_configured_time_zone() -> None:
    now = datetime(2026, 11, 23, 23, 30, tzinfo=UTC)  # already the 24th in Tokyo
    start, end = day_bounds(now, ZoneInfo("Asia/Tokyo"))
    assert (start.isoformat(), end.isoformat()) == (
        "2026-11-24T00:00:00+09:00",
        "2026-11-25T00:00:00+09:00",
    )


def test_the_summary_shows_every_limit_and_the_reset() -> None:
    text = summary(
        DEFAULT, Usage(images=3, gpu_seconds=12.5, cost=0.25, jobs_queued=1), MIDNIGHT, "EUR"
    )
    assert text.splitlines() == [
        "Images today: 3 of 10, 7 left",
        "GPU seconds today: 12.5 of 100, 87.5 left",
        "Cost today (EUR): 0.25 (no limit)",
        "Jobs queued or running: 1 of 2, 1 left",
        f"Daily limits reset <t:{int(MIDNIGHT.timestamp())}:R>.",
    ]
