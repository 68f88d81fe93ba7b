"""Waits estimated from the queue's measured pace, as pure functions of that pace."""

from __future__ import annotations

from bot.jobs.pace import Pace, seconds_until_done

IDLE = Pace(0.0)  # nothing finished in the last hour


def test_a_job_takes_a_minute_over_the_jobs_finished_per_minute() -> None:
    assert Pace(4.0).seconds_per_job() == 15.0
    assert Pace(0.5).seconds_per_job() == 120.0


def test_without_a_pace_there_is_no_estimate() -> None:
    assert IDLE.seconds_per_job() is None
    assert IDLE.minutes_to_drain(30) is None


def test_draining_takes_whole_minutes_and_at_least_one() -> None:
    assert Pace(4.0).minutes_to_drain(9) == 3
    assert Pace(4.0).minutes_to_drain(8) == 2
    assert Pace(100.0).minutes_to_drain(1) == 1
    assert Pace(100.0).minutes_to_drain(0) == 1


def test_a_queued_job_waits_for_the_jobs_ahead_then_its_own_run() -> None:
    assert seconds_until_done(15.0, position=1) == 15.0
    assert seconds_until_done(15.0, position=3) == 45.0


def test_a_running_job_has_only_the_rest_of_its_run_left() -> None:
    assert seconds_until_done(20.0, position=1, left=0.25) == 5.0
    assert seconds_until_done(10.0, position=1, left=1 - 1 / 3) == 6.7
