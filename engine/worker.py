"""The engine process: `python -m engine --protocol-fd N`.

Requests arrive on stdin and events leave on fd N, one JSON line each (see
engine.protocol); stdout is pointed at stderr so a library's print can never
corrupt the protocol. The first line must be a `SetupRequest` with this
engine's protocol version; otherwise the engine answers with a `JobError`
and exits with code 2. A reader thread then buffers requests, and answers a
`StatusRequest` at once, while the main thread runs batches (a request of
one or more jobs) one at a time; a `ShutdownRequest` or the end of stdin
ends the process with code 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import BinaryIO

from pydantic import ValidationError

from engine.faults import FaultPlan
from engine.logs import job_context, quiet_libraries, setup_logging
from engine.protocol import (
    PROTOCOL_VERSION,
    CancelRequest,
    ErrorCode,
    GenerateRequest,
    JobError,
    Ready,
    SetupRequest,
    ShutdownRequest,
    Status,
    StatusRequest,
    decode_request,
)
from engine.wire import EventChannel, LineTooLong, describe, job_ids_of, read_line

log = logging.getLogger("engine")

EXIT_OK = 0
EXIT_BAD_SETUP = 2


class BatchCancels:
    """The cancelled jobs of the running batch: set by the reader thread, read by the runner."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled: frozenset[str] = frozenset()

    def cancel(self, job_ids: Iterable[str]) -> None:
        with self._lock:
            self._cancelled |= frozenset(job_ids)

    def cancelled(self) -> frozenset[str]:
        with self._lock:
            return self._cancelled


class JobBuffer:
    """Batches received but not started, and the cancels of the one running.

    The bot owns the real queue and sends one batch at a time; this buffer only
    holds what arrives while a batch runs, so a cancel can find its job either way.
    """

    def __init__(self, channel: EventChannel) -> None:
        self._channel = channel
        self._ready = threading.Condition()
        self._waiting: deque[GenerateRequest] = deque()
        self._running: tuple[GenerateRequest, BatchCancels] | None = None
        self._closed = False

    def put(self, request: GenerateRequest) -> None:
        with self._ready:
            self._waiting.append(request)
            self._ready.notify()

    @property
    def running(self) -> GenerateRequest | None:
        with self._ready:
            return None if self._running is None else self._running[0]

    def cancel(self, job_id: str) -> None:
        """Cancel one job: in the running batch (the runner drops its work), or waiting."""
        with self._ready:
            if self._running is not None and job_id in self._running[0].job_ids:
                self._running[1].cancel([job_id])
                return
            found = next((r for r in self._waiting if job_id in r.job_ids), None)
            if found is not None:
                # The rest of a waiting batch still runs; a batch left with no job is dropped.
                rest = [job for job in found.jobs if job.job_id != job_id]
                position = self._waiting.index(found)
                if rest:
                    self._waiting[position] = found.model_copy(update={"jobs": rest})
                else:
                    del self._waiting[position]
        if found is None:
            log.info("cancel for job %s, which is neither running nor waiting", job_id)
        else:
            self._drop(job_id, "cancelled before it started")

    def close(self) -> None:
        """No more requests: cancel the running batch and drop the waiting ones."""
        with self._ready:
            self._closed = True
            if self._running is not None:
                self._running[1].cancel(self._running[0].job_ids)
            dropped = [job_id for request in self._waiting for job_id in request.job_ids]
            self._waiting.clear()
            self._ready.notify()
        for job_id in dropped:
            self._drop(job_id, "cancelled: the engine is shutting down")

    def next_batch(self) -> tuple[GenerateRequest, BatchCancels] | None:
        """Block until a batch can start; None once the buffer is closed."""
        with self._ready:
            self._running = None
            self._ready.wait_for(lambda: self._waiting or self._closed)
            if self._closed:
                return None
            request = self._waiting.popleft()
            cancels = BatchCancels()
            self._running = (request, cancels)
            return request, cancels

    def _drop(self, job_id: str, message: str) -> None:
        log.info("%s", message, extra={"job_id": job_id})
        self._channel.send(JobError(job_id=job_id, code=ErrorCode.CANCELLED, message=message))


def read_requests(
    stdin: BinaryIO,
    jobs: JobBuffer,
    channel: EventChannel,
    status: Callable[[GenerateRequest | None], Status],
) -> None:
    """The reader thread: feed `jobs` until shutdown or end of input, then close it.

    Status requests are answered here, so the bot gets one even while a job runs.
    """
    try:
        while (request := _next_request(stdin, channel)) is not None:
            if isinstance(request, GenerateRequest):
                jobs.put(request)
            elif isinstance(request, CancelRequest):
                jobs.cancel(request.job_id)
            elif isinstance(request, StatusRequest):
                channel.send(status(jobs.running))
            elif isinstance(request, ShutdownRequest):
                log.info("shutdown requested")
                return
            else:
                channel.send(_bad_request(None, "the engine is already set up"))
        log.info("stdin closed")
    finally:
        jobs.close()


def _next_request(
    stdin: BinaryIO, channel: EventChannel
) -> SetupRequest | GenerateRequest | CancelRequest | ShutdownRequest | StatusRequest | None:
    """The next valid request; refused lines are answered with bad_request and skipped."""
    while True:
        try:
            line = read_line(stdin)
        except LineTooLong as error:
            channel.send(_bad_request(None, str(error)))
            continue
        if line is None:
            return None
        if not line.strip():
            continue
        try:
            return decode_request(line)
        except ValidationError as error:
            log.warning("%s: %.200r", describe(error), line)
            # Every job the line meant to carry fails at once, with the reason.
            job_ids: list[str | None] = [*job_ids_of(line)] or [None]
            for job_id in job_ids:
                channel.send(_bad_request(job_id, describe(error)))


def _bad_request(job_id: str | None, message: str) -> JobError:
    return JobError(job_id=job_id, code=ErrorCode.BAD_REQUEST, message=message)


def _read_setup(stdin: BinaryIO) -> SetupRequest | str | None:
    """The handshake line: a SetupRequest, a reason to refuse it, or None at end of input."""
    try:
        line = read_line(stdin)
    except LineTooLong as error:
        return str(error)
    if line is None:
        return None
    try:
        request = decode_request(line)
    except ValidationError as error:
        return describe(error)
    if not isinstance(request, SetupRequest):
        return f"expected a setup request first, got {request.type!r}"
    if request.version != PROTOCOL_VERSION:
        return (
            f"protocol version {request.version} requested; this engine speaks {PROTOCOL_VERSION}"
        )
    return request


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__)
    parser.add_argument(
        "--protocol-fd", type=int, required=True, help="inherited fd to write events to (>= 3)"
    )
    args = parser.parse_args(argv)
    if args.protocol_fd < 3:
        parser.error("--protocol-fd must be an inherited descriptor other than 0, 1 or 2")
    channel = EventChannel(args.protocol_fd)
    # At the fd level, so prints from C extensions and child libraries move too.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    setup_logging()
    try:
        faults = FaultPlan.from_env(os.environ)
    except ValueError as error:
        log.error("%s", error)
        return EXIT_BAD_SETUP
    stdin = sys.stdin.buffer

    setup = _read_setup(stdin)
    if setup is None:
        log.info("stdin closed before setup")
        return EXIT_OK
    if isinstance(setup, str):
        log.error("refused setup: %s", setup)
        channel.send(_bad_request(None, setup))
        return EXIT_BAD_SETUP

    quiet_libraries()
    # Imported after the handshake: torch and diffusers take seconds to import.
    from engine.errors import BadRequest
    from engine.runner import JobRunner

    try:
        runner = JobRunner(setup, channel, faults)
        runner.warm_up()
    except BadRequest as error:
        log.error("refused setup: %s", error)
        channel.send(_bad_request(None, str(error)))
        return EXIT_BAD_SETUP
    channel.send(Ready(device=setup.device, models=runner.registry.names))
    log.info("ready on %s with models %s", setup.device, ", ".join(runner.registry.names))

    jobs = JobBuffer(channel)
    threading.Thread(
        target=read_requests,
        args=(stdin, jobs, channel, runner.status),
        name="requests",
        daemon=True,
    ).start()
    while (batch := jobs.next_batch()) is not None:
        request, cancels = batch
        # Every line logged for the batch names all its jobs, so a grep for one finds it.
        with job_context(",".join(request.job_ids)):
            private = {"jobs": {"__all__": {"prompt", "negative_prompt"}}}
            log.info("batch started: %s", request.model_dump_json(exclude=private))
            for event in runner.run(request, cancels.cancelled):
                channel.send(event)
    log.info("engine stopped")
    return EXIT_OK
