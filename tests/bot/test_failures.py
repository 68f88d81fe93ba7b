"""What a member reads about a job that made no images: one sentence by kind, no internals."""

from __future__ import annotations

import re

import pytest

from bot.jobs.failures import FailureKind, failure_kind, member_failure
from bot.store.models import JobState

# Errors as the engine, the engine client and the job store write them.
STORED = [
    (
        "the GPU ran out of memory making 4 image(s) at 1024x1024, even one at a time;"
        " try a smaller size or fewer images",
        FailureKind.OUT_OF_MEMORY,
    ),
    (
        "the GPU ran out of memory loading model 'sdxl'; try again when fewer models are in use",
        FailureKind.OUT_OF_MEMORY,
    ),
    ("the job took longer than 600 s; the engine was restarted", FailureKind.TIMEOUT),
    (
        "the engine on cuda:0 exited unexpectedly (code -9); it restarts for the next job",
        FailureKind.ENGINE_STOPPED,
    ),
    ("the engine on cuda:0 went away", FailureKind.ENGINE_STOPPED),
    ("engine on cpu did not start: Ready(version=1)", FailureKind.ENGINE_STOPPED),
    ("the engine sent an oversized protocol line", FailureKind.ENGINE_STOPPED),
    (
        "the engine on cuda:0 exited unexpectedly (code -11); it restarts for the next job"
        " (it stopped the engine 2 times; not retried)",
        FailureKind.NOT_RETRIED,
    ),
    (
        "the bot stopped while it ran (it stopped the bot 2 times; not retried)",
        FailureKind.NOT_RETRIED,
    ),
    ("the bot stopped while it ran", FailureKind.BOT_STOPPED),
    (
        "the init image could not be read: [Errno 2] No such file or directory:"
        " '/srv/atelier/data/inputs/ab12/image.png'",
        FailureKind.INPUT_GONE,
    ),
    ("unknown model 'old'; configured models: tiny", FailureKind.UNKNOWN_MODEL),
    (
        "RuntimeError: expected scalar type Half but found Float at /opt/venv/lib/python3.11/"
        "site-packages/torch/nn/functional.py:2",
        FailureKind.INTERNAL,
    ),
    (
        'Traceback (most recent call last):\n  File "/srv/atelier/engine/worker.py", line 3',
        FailureKind.INTERNAL,
    ),
    (None, FailureKind.INTERNAL),
]

INTERNALS = re.compile(r"Traceback|File \"|/srv|/opt|Errno|Error\b|\.py|cuda:|code -")


@pytest.mark.parametrize(("error", "kind"), STORED)
def test_each_stored_error_reads_as_one_friendly_sentence_of_its_kind(
    error: str | None, kind: FailureKind
) -> None:
    assert failure_kind(JobState.FAILED, error) is kind
    text = member_failure("ab12cd34ef", JobState.FAILED, error)
    assert text.startswith("❌ Job `ab12cd34ef` failed: ")
    assert INTERNALS.search(text) is None, text
    assert text.count(". ") == 0 and text.endswith(".")  # one sentence
    assert len(text) < 160


def test_the_member_is_told_what_to_do_for_the_kinds_they_can_act_on() -> None:
    def said(error: str) -> str:
        return member_failure("j", JobState.FAILED, error)

    assert "smaller size" in said("the GPU ran out of memory making 1 image(s) at 64x64")
    assert "try again" in said("the engine on cpu exited unexpectedly (code 1)")
    assert "fewer steps" in said("the job took longer than 10 s; the engine was restarted")


def test_cancelled_and_blocked_jobs_say_so_whatever_their_error() -> None:
    assert member_failure("j", JobState.CANCELLED, "cancelled at step 3 of 30") == (
        "🛑 Job `j` was cancelled."
    )
    assert failure_kind(JobState.CANCELLED, None) is FailureKind.CANCELLED
    blocked = member_failure("j", JobState.BLOCKED, "nsfw score 0.97 > 0.8")
    assert "withheld" in blocked and "0.97" not in blocked
