"""The bot's handle on one engine subprocess (one per GPU).

The engine is `python -m engine`, started with asyncio's subprocess API: it
reads requests on stdin and writes events on a pipe of its own (fd passed at
spawn), so a library that prints to stdout can never corrupt the protocol.
If the engine dies, hangs or talks nonsense, the running batch fails with a
clear error and the next batch gets a freshly started engine.

After the handshake one reader task owns the event pipe: it answers status
queries (which may come while a batch runs) and hands job events to `run`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Mapping

from pydantic import ValidationError

from engine.protocol import (
    PROTOCOL_VERSION,
    CancelRequest,
    ClassifierSettings,
    EngineSpeed,
    Event,
    GenerateRequest,
    JobError,
    JobResult,
    LoraSpec,
    ModelSpec,
    Progress,
    Ready,
    SetupRequest,
    ShutdownRequest,
    Status,
    StatusRequest,
    decode_event,
    encode,
)

log = logging.getLogger(__name__)

# Called for each Progress; it must not block (see EngineProcess.run).
ProgressCallback = Callable[[Progress], None]

# Importing torch and diffusers alone takes seconds; model loads are lazy.
START_TIMEOUT = 180.0
# With `[engine] compile`, the engine compiles and warms up before it is ready.
COMPILE_START_TIMEOUT = 1800.0
STOP_TIMEOUT = 10.0
STATUS_TIMEOUT = 5.0
# A protocol line carries no image bytes, so anything longer is garbage.
MAX_LINE = 1 << 20


class EngineFailure(Exception):
    """The engine process could not finish a batch (crash, hang, broken protocol).

    `outcomes` holds the jobs of the batch the engine had already answered.
    """

    def __init__(
        self, message: str, outcomes: Mapping[str, JobResult | JobError] | None = None
    ) -> None:
        super().__init__(message)
        self.outcomes: dict[str, JobResult | JobError] = dict(outcomes or {})


class EngineProcess:
    """One running `python -m engine`; `run` executes one batch (one request) at a time."""

    def __init__(
        self,
        device: str,
        models: dict[str, ModelSpec],
        env: dict[str, str],
        model_memory_gb: float | None = None,
        speed: EngineSpeed | None = None,
        classifier: ClassifierSettings | None = None,
        loras: dict[str, LoraSpec] | None = None,
    ) -> None:
        self.device = device
        self._models = models
        self._loras = loras or {}
        self._env = env
        self._model_memory_gb = model_memory_gb
        self._speed = speed or EngineSpeed()
        self._classifier = classifier or ClassifierSettings()
        self._process: asyncio.subprocess.Process | None = None
        self._events: asyncio.StreamReader | None = None
        self._transport: asyncio.ReadTransport | None = None
        self._reader: asyncio.Task[None] | None = None
        # Job events, or the EngineFailure that ended the pipe.
        self._job_events: asyncio.Queue[Event | EngineFailure] = asyncio.Queue()
        self._status_waiters: list[asyncio.Future[Status]] = []
        # Starts so far; each after the first is a restart (crash, hang, kill).
        self.starts = 0

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.returncode is None

    @property
    def warms_up(self) -> bool:
        """Whether starting takes a compile warm-up, so it is better done before a job."""
        return self._speed.compile

    @property
    def exit_code(self) -> int | None:
        """How the last engine process ended; None while it runs or before the first start."""
        return None if self._process is None else self._process.returncode

    async def start(self) -> Ready:
        read_fd, write_fd = os.pipe()
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "engine",
                "--protocol-fd",
                str(write_fd),
                stdin=asyncio.subprocess.PIPE,
                pass_fds=(write_fd,),
                env=self._env,
            )
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
                device=self.device,
                models=self._models,
                model_memory_gb=self._model_memory_gb,
                speed=self._speed,
                classifier=self._classifier,
                loras=self._loras,
            )
        )
        limit = COMPILE_START_TIMEOUT if self.warms_up else START_TIMEOUT
        try:
            event = await asyncio.wait_for(self._next_event(), limit)
        except TimeoutError:
            await self.kill()
            raise EngineFailure(
                f"the engine on {self.device} did not start within {limit:g} s"
            ) from None
        if not isinstance(event, Ready) or event.version != PROTOCOL_VERSION:
            await self.kill()
            if isinstance(event, JobError):  # a setting the engine cannot run, in its words
                raise EngineFailure(
                    f"the engine on {self.device} refused to start: {event.message}"
                )
            raise EngineFailure(f"engine on {self.device} did not start: {event!r}")
        self._job_events = asyncio.Queue()
        self._reader = asyncio.create_task(self._read_events(), name=f"engine-{self.device}")
        self.starts += 1
        log.info("engine on %s ready (pid %s)", self.device, self._process.pid)
        return event

    async def run(
        self, request: GenerateRequest, on_progress: ProgressCallback, time_limit: float
    ) -> dict[str, JobResult | JobError]:
        """Run one batch; each job's result or error, by job id in request order.

        `on_progress` is called with every `Progress` of every job of the batch,
        inline in the loop that watches the engine: it must return at once
        (the job service's listeners only note the newest step) and never raise, so a slow
        Discord edit can neither delay the other events nor count against
        `time_limit`, which measures the engine's time on the whole batch.
        Raises EngineFailure if the engine crashed, hung or broke the protocol;
        the outcomes it had already sent are on the exception.
        """
        await self._send(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + time_limit
        waiting = set(request.job_ids)
        outcomes: dict[str, JobResult | JobError] = {}
        while waiting:
            try:
                event = await asyncio.wait_for(self._job_events.get(), deadline - loop.time())
            except TimeoutError:
                # A stuck GPU call cannot be interrupted any other way.
                await self.kill()
                raise EngineFailure(
                    f"the batch took longer than {time_limit:g} s; the engine was restarted",
                    outcomes,
                ) from None
            if isinstance(event, EngineFailure):
                raise EngineFailure(str(event), outcomes) from event
            if isinstance(event, Progress) and event.job_id in waiting:
                on_progress(event)
            elif isinstance(event, JobResult | JobError) and event.job_id in waiting:
                outcomes[event.job_id] = event
                waiting.remove(event.job_id)
            else:
                log.warning("batch %s: ignoring unrelated engine event %r", request.batch_id, event)
        return {job_id: outcomes[job_id] for job_id in request.job_ids}

    async def cancel(self, job_id: str) -> None:
        if self.alive:
            await self._send(CancelRequest(job_id=job_id))

    async def status(self) -> Status | None:
        """What the engine has loaded and how much memory it uses; None if it is not up."""
        if not self.alive or self._reader is None:
            return None
        waiter = asyncio.get_running_loop().create_future()
        self._status_waiters.append(waiter)
        try:
            await self._send(StatusRequest())
            return await asyncio.wait_for(asyncio.shield(waiter), STATUS_TIMEOUT)
        except (TimeoutError, EngineFailure):
            return None
        finally:
            if waiter in self._status_waiters:
                self._status_waiters.remove(waiter)

    async def stop(self) -> None:
        """Ask the engine to exit; kill it if it does not within STOP_TIMEOUT."""
        if self.alive:
            try:
                await self._send(ShutdownRequest())
                assert self._process is not None
                await asyncio.wait_for(self._process.wait(), STOP_TIMEOUT)
            except (TimeoutError, EngineFailure):
                await self.kill()
        await self._close()

    async def kill(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()
        await self._close()

    async def _close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def _send(
        self,
        request: SetupRequest | GenerateRequest | CancelRequest | ShutdownRequest | StatusRequest,
    ) -> None:
        if self._process is None or self._process.stdin is None or not self.alive:
            raise EngineFailure(f"the engine on {self.device} is not running")
        try:
            self._process.stdin.write(encode(request))
            await self._process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as error:
            raise EngineFailure(f"the engine on {self.device} went away") from error

    async def _read_events(self) -> None:
        """The reader task: status answers to their waiters, the rest to `run`."""
        try:
            while True:
                event = await self._next_event()
                if isinstance(event, Status):
                    for waiter in self._status_waiters:
                        if not waiter.done():
                            waiter.set_result(event)
                else:
                    self._job_events.put_nowait(event)
        except EngineFailure as failure:
            self._job_events.put_nowait(failure)
            for waiter in self._status_waiters:  # no answer is coming: say so now
                if not waiter.done():
                    waiter.set_exception(failure)

    async def _next_event(self) -> Event:
        """The next valid event; garbage lines are logged and skipped."""
        assert self._events is not None
        while True:
            try:
                line = await self._events.readline()
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
