"""The engine's ends of the pipes: request lines from stdin, event lines to the protocol fd."""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import BinaryIO

from pydantic import ValidationError

from engine.protocol import Message, encode

log = logging.getLogger(__name__)

# A request carries no image bytes, so a longer line is garbage, not a request.
MAX_LINE = 1 << 20


class EventChannel:
    """Writes whole event lines to the protocol fd, from any thread, flushed at once.

    Once the bot has gone (the pipe is broken) events are dropped: nobody is left to
    read them, and the engine ends when its stdin closes."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self._broken = False

    def send(self, event: Message) -> None:
        self.write_raw(encode(event))

    def write_raw(self, data: bytes) -> None:
        with self._lock:
            if self._broken:
                return
            try:
                # Unbuffered: nothing is left behind to flush (and fail) at exit.
                unwritten = memoryview(data)
                while unwritten:
                    unwritten = unwritten[os.write(self._fd, unwritten) :]
            except BrokenPipeError:
                self._broken = True
                log.info("the bot closed the event pipe; events are dropped from here on")


class LineTooLong(ValueError):
    pass


def read_line(stream: BinaryIO) -> bytes | None:
    """The next line, or None at end of input; raises LineTooLong after skipping an overlong one."""
    line = stream.readline(MAX_LINE + 1)
    if not line:
        return None
    if len(line) > MAX_LINE and not line.endswith(b"\n"):
        while (rest := stream.readline(MAX_LINE)) and not rest.endswith(b"\n"):
            pass
        raise LineTooLong(f"request line longer than {MAX_LINE} bytes")
    return line


def describe(error: ValidationError) -> str:
    """A one-line account of why a request line was refused."""
    problems = [
        f"{'.'.join(str(part) for part in item['loc']) or 'line'}: {item['msg']}"
        for item in error.errors(include_url=False)[:3]
    ]
    return "bad request line: " + "; ".join(problems)


def job_ids_of(line: bytes) -> list[str]:
    """The job ids a refused line meant to carry, so the bot can fail those jobs at once."""
    try:
        payload = json.loads(line)
    except ValueError:
        return []
    jobs = payload.get("jobs") if isinstance(payload, dict) else None
    if not isinstance(jobs, list):
        return []
    job_ids = [job.get("job_id") for job in jobs if isinstance(job, dict)]
    # Once each: a line refused for a repeated job id must not answer that job twice.
    return list(dict.fromkeys(job_id for job_id in job_ids if isinstance(job_id, str)))
