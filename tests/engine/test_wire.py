"""The engine's event pipe outlives the bot that reads it."""

from __future__ import annotations

import os

from engine.protocol import Progress
from engine.wire import EventChannel


def test_events_after_the_bot_closed_the_pipe_are_dropped_without_an_error() -> None:
    read_end, write_end = os.pipe()
    channel = EventChannel(write_end)
    channel.send(Progress(job_id="j", step=1, total=2))
    assert os.read(read_end, 1 << 16).startswith(b'{"type":"progress"')
    os.close(read_end)  # the bot died
    for step in (2, 2):
        channel.send(Progress(job_id="j", step=step, total=2))  # neither raises
    os.close(write_end)
