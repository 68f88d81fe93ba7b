"""For tests only: make the engine fail on demand, so tests can check that the bot survives it.

Set ATELIER_ENGINE_FAULT in the engine's environment to one or more faults
separated by ';':

    crash_at_step=N   the process kills itself (SIGKILL) when step N of a batch ends
    hang_at_step=N    the batch stops at step N and never returns
    oom_at_step=N     step N raises torch.cuda.OutOfMemoryError (the engine stays up)
    oom_if_batch_over=N
                      a pipeline call of more than N images raises torch.cuda.OutOfMemoryError
                      before it starts, as on a device where only N fit (0: none fit)
    garbage           a non-JSON line is written on the protocol channel before the results

Steps count over the whole batch (one request), as its Progress events do. A fault ending in
"@TEXT" hits only batches with a job whose prompt contains TEXT, so one engine
can serve normal jobs and faulty ones: "crash_at_step=3@crash me;garbage@noise".
Unset in production: then the engine has no faults.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from engine.protocol import GenerateRequest

FAULT_ENV = "ATELIER_ENGINE_FAULT"
GARBAGE_LINE = b"this is not JSON {\n"


class FaultKind(StrEnum):
    CRASH = "crash_at_step"
    HANG = "hang_at_step"
    OUT_OF_MEMORY = "oom_at_step"
    OUT_OF_MEMORY_OVER = "oom_if_batch_over"
    GARBAGE = "garbage"


# Faults that take a number (a step, or a batch size).
_COUNTED_FAULTS = (
    FaultKind.CRASH,
    FaultKind.HANG,
    FaultKind.OUT_OF_MEMORY,
    FaultKind.OUT_OF_MEMORY_OVER,
)


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    step: int | None = None  # the step, or the batch size for OUT_OF_MEMORY_OVER
    prompt_contains: str | None = None

    def hits(self, request: GenerateRequest) -> bool:
        if self.prompt_contains is None:
            return True
        return any(self.prompt_contains in job.prompt for job in request.jobs)


def parse_faults(spec: str) -> tuple[Fault, ...]:
    """Parse ATELIER_ENGINE_FAULT; raises ValueError naming the bad part."""
    faults = []
    for part in filter(None, (item.strip() for item in spec.split(";"))):
        body, _, prompt_contains = part.partition("@")
        name, has_step, step = body.partition("=")
        try:
            kind = FaultKind(name.strip())
        except ValueError:
            choices = ", ".join(kind.value for kind in FaultKind)
            raise ValueError(f"unknown fault {name!r} in {part!r}; known: {choices}") from None
        if (kind in _COUNTED_FAULTS) != bool(has_step) or (has_step and not step.isdigit()):
            usage = f"{kind}=N" if kind in _COUNTED_FAULTS else str(kind)
            raise ValueError(f"bad fault {part!r}; write {usage}[@PROMPT TEXT]")
        faults.append(Fault(kind, int(step) if has_step else None, prompt_contains or None))
    return tuple(faults)


class FaultPlan:
    """The faults this engine was told to inject; empty (a no-op) unless the env var is set."""

    def __init__(self, faults: tuple[Fault, ...] = ()) -> None:
        self.faults = faults

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> FaultPlan:
        return cls(parse_faults(environ.get(FAULT_ENV, "")))

    def before_batch(self, request: GenerateRequest, size: int) -> None:
        for fault in self.faults:
            if fault.kind is not FaultKind.OUT_OF_MEMORY_OVER or not fault.hits(request):
                continue
            if fault.step is not None and size > fault.step:
                _raise_out_of_memory(f"a batch of {size} image(s)")

    def at_step(self, request: GenerateRequest, step: int) -> None:
        for fault in self.faults:
            if fault.kind is FaultKind.OUT_OF_MEMORY_OVER:
                continue
            if fault.step != step or not fault.hits(request):
                continue
            if fault.kind is FaultKind.CRASH:
                os.kill(os.getpid(), signal.SIGKILL)
            elif fault.kind is FaultKind.HANG:
                while True:
                    time.sleep(3600)
            elif fault.kind is FaultKind.OUT_OF_MEMORY:
                _raise_out_of_memory(f"step {step}")

    def before_result(self, request: GenerateRequest, write_raw: Callable[[bytes], None]) -> None:
        if any(f.kind is FaultKind.GARBAGE and f.hits(request) for f in self.faults):
            write_raw(GARBAGE_LINE)


def _raise_out_of_memory(where: str) -> None:
    import torch  # already loaded by the running job; keeps this module light

    raise torch.cuda.OutOfMemoryError(f"simulated by {FAULT_ENV} at {where}")
