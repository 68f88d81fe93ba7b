"""The bot's handle on one engine subprocess (one per GPU).

The engine is `python -m engine`, started with asyncio's subprocess API: it
reads requests on stdin and writes events on a pipe of its own (fd passed at
spawn), so a library that prints to stdout can never corrupt the protocol.
If the engine dies, hangs or talks nonsense, the running job fails with a
clear error and the next job gets a freshly started engine.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable

from pydantic import ValidationError

from engine.protocol import (
    PROTOCOL_VERSION,
    CancelRequest,
    Event,
    GenerateRequest,
    JobError,
    JobResult,
    ModelSpec,
    Progress,
    Ready,
    SetupRequest,
    ShutdownRequest,
    decode_event,
    encode,
)

log = logging.getLogger(__name__)

ProgressCallback = Callable[[Progress], Awaitable[None]]

# Importing torch and diffusers alone takes seconds; model loads are lazy.
START_TIMEOUT = 180.0
STOP_TIMEOUT = 10.0
# A protocol line carries no image bytes, so anything longer is garbage.
MAX_LINE = 1 << 20


class EngineFailure(Exception):
    """The engine process could not finish a job (crash, hang, broken protocol)."""


class JobFailed(Exception):
    """The engine reported a job error; `error.code` says which kind."""

    def __init__(self, error: JobError) -> None:
        super().__init__(error.message)
        self.error = error


class EngineProcess:
    """One running `python -m engine`; `run` executes one job at a time."""

    def __init__(
        self,
        device: str,
        models: dict[str, ModelSpec],
        env: dict[str, str],
        model_memory_gb: float | None = None,
    ) -> None:
        self.device = device
        self._models = models
        self._env = env
        self._model_memory_gb = model_memory_gb
        self._process: asyncio.subprocess.Process | None = None
        self._events: asyncio.StreamReader | None = None
        self._transport: asyncio.ReadTransport | None = None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> Ready:
        read_fd, write_fd = os.pipe()
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "engine", "--protocol-fd", str(write_fd),
                stdin=asyncio.subprocess.PIPE,
                pass_fds=(write_fd,),
                env=self._env,
            )  # fmt: skip
        finally:
            os.close(write_fd)
        loop = asyncio.get_running_loop()
        events = self._events = asyncio.StreamReader(limit=MAX_LINE, loop=loop)
        self._transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(events, loop=loop),
            os.fdopen(read_fd, "rb", buffering=0),
        )
        await self._send(
            SetupRequest(
                device=self.device, models=self._models, model_memory_gb=self._model_memory_gb
            )
        )
        event = await self._next_event(
            START_TIMEOUT, f"the engine on {self.device} did not start within {START_TIMEOUT} s"
        )
        if not isinstance(event, Ready) or event.version != PROTOCOL_VERSION:
            await self.kill()
            raise EngineFailure(f"engine on {self.device} did not start: {event!r}")
        log.info("engine on %s ready (pid %s)", self.device, self._process.pid)
        return event

    async def run(
        self, request: GenerateRequest, on_progress: ProgressCallback, time_limit: float
    ) -> JobResult:
        """Run one job; raises JobFailed for a job error, EngineFailure if the engine broke."""
        await self._send(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + time_limit
        while True:
            event = await self._next_event(
                deadline - loop.time(),
                f"the job took longer than {time_limit:g} s; the engine was restarted",
            )
            if isinstance(event, Progress) and event.job_id == request.job_id:
                await on_progress(event)
            elif isinstance(event, JobResult) and event.job_id == request.job_id:
                return event
            elif isinstance(event, JobError) and event.job_id == request.job_id:
                raise JobFailed(event)
            else:
                log.warning("job %s: ignoring unrelated engine event %r", request.job_id, event)

    async def cancel(self, job_id: str) -> None:
        if self.alive:
            await self._send(CancelRequest(job_id=job_id))

    async def stop(self) -> None:
        """Ask the engine to exit; kill it if it does not within STOP_TIMEOUT."""
        if self.alive:
            try:
                await self._send(ShutdownRequest())
                assert self._process is not None
                await asyncio.wait_for(self._process.wait(), STOP_TIMEOUT)
            except (TimeoutError, EngineFailure):
                await self.kill()
        self._close_pipe()

    async def kill(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()
        self._close_pipe()

    def _close_pipe(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def _send(
        self, request: SetupRequest | GenerateRequest | CancelRequest | ShutdownRequest
    ) -> None:
        if self._process is None or self._process.stdin is None or not self.alive:
            raise EngineFailure(f"the engine on {self.device} is not running")
        try:
            self._process.stdin.write(encode(request))
            await self._process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as error:
            raise EngineFailure(f"the engine on {self.device} went away") from error

    async def _next_event(self, wait_seconds: float, too_slow: str) -> Event:
        """The next valid event; garbage lines are logged and skipped.

        With no event within `wait_seconds` the engine is killed (a stuck GPU
        call cannot be interrupted any other way) and EngineFailure(too_slow) raised.
        """
        assert self._events is not None
        while True:
            try:
                line = await asyncio.wait_for(self._events.readline(), wait_seconds)
            except TimeoutError:
                await self.kill()
                raise EngineFailure(too_slow) from None
            except ValueError:  # a line over MAX_LINE
                await self.kill()
                raise EngineFailure("the engine sent an oversized protocol line") from None
            if not line:
                code = await self._exit_code()
                raise EngineFailure(
                    f"the engine on {self.device} exited unexpectedly (code {code});"
                    " it restarts for the next job"
                )
            try:
                return decode_event(line)
            except ValidationError:
                log.error("engine on %s sent a bad protocol line: %.200r", self.device, line)

    async def _exit_code(self) -> int | None:
        assert self._process is not None
        try:
            return await asyncio.wait_for(self._process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            await self.kill()
            return self._process.returncode
