"""A real `python -m engine` subprocess, driven line by line the way the bot drives it."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

from engine.protocol import (
    Event,
    JobError,
    JobResult,
    Message,
    ModelSpec,
    Ready,
    SetupRequest,
    decode_event,
    encode,
)

REPO = Path(__file__).resolve().parents[2]
# Importing torch and diffusers takes seconds, more on a busy machine.
START_TIMEOUT = 120.0
EVENT_TIMEOUT = 60.0


class EngineUnderTest:
    def __init__(self, log_path: Path, env: dict[str, str] | None = None) -> None:
        read_fd, write_fd = os.pipe()
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "engine", "--protocol-fd", str(write_fd)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                pass_fds=(write_fd,),
                cwd=REPO,
                env=dict(os.environ) | (env or {}),
            )
        os.close(write_fd)
        self._events = read_fd
        self._buffer = b""

    def start(self, models: dict[str, ModelSpec]) -> Ready:
        self.send_setup(models)
        return self.ready()

    def send_setup(self, models: dict[str, ModelSpec]) -> None:
        self.send(SetupRequest(device="cpu", models=models))

    def ready(self) -> Ready:
        ready = self.next_event(START_TIMEOUT)
        assert isinstance(ready, Ready), ready
        return ready

    def send(self, message: Message | bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(message if isinstance(message, bytes) else encode(message))
        self.process.stdin.flush()

    def read_line(self, timeout: float = EVENT_TIMEOUT) -> bytes:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select([self._events], [], [], max(remaining, 0))
            if not readable:
                raise TimeoutError(f"no event within {timeout} s; see {self.log_path}")
            chunk = os.read(self._events, 1 << 16)
            if not chunk:
                raise EOFError(f"the engine closed its protocol channel; see {self.log_path}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line + b"\n"

    def next_event(self, timeout: float = EVENT_TIMEOUT) -> Event:
        return decode_event(self.read_line(timeout))

    def events_until_done(self, job_id: str) -> list[Event]:
        """Events up to and including the result or error of `job_id`."""
        events: list[Event] = []
        while True:
            event = self.next_event()
            events.append(event)
            if isinstance(event, JobResult | JobError) and event.job_id == job_id:
                return events

    def close_stdin(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()

    def wait(self, timeout: float = 30.0) -> int:
        return self.process.wait(timeout)

    def stdout(self) -> bytes:
        assert self.process.stdout is not None
        return self.process.stdout.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        os.close(self._events)
