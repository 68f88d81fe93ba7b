"""Runs one job at a time and turns every way it can end into one protocol event."""

from __future__ import annotations

import gc
import logging
import threading

import torch

from engine.errors import BadRequest, Cancelled, JobFailure
from engine.faults import FaultPlan
from engine.models import ModelRegistry
from engine.pipelines import generate
from engine.protocol import ErrorCode, GenerateRequest, JobError, JobResult, Progress, SetupRequest
from engine.wire import EventChannel

log = logging.getLogger(__name__)

MAX_ERROR_MESSAGE = 300


def resolve_device(name: str) -> torch.device:
    """The torch device called `name`, if this machine has it."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BadRequest(f"unknown device {name!r}; use cuda, cuda:N, mps or cpu") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BadRequest(f"device {name!r} requested but this torch build sees no CUDA GPU")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise BadRequest(f"device {name!r} requested but MPS is not available")
    return device


class JobRunner:
    def __init__(self, setup: SetupRequest, channel: EventChannel, faults: FaultPlan) -> None:
        self.registry = ModelRegistry(setup.models, resolve_device(setup.device))
        self._channel = channel
        self._faults = faults

    def run(self, request: GenerateRequest, cancel: threading.Event) -> JobResult | JobError:
        """Run `request`, sending progress; `cancel` is checked after every step."""

        def on_step(step: int, total: int) -> None:
            self._faults.at_step(request, step)
            if cancel.is_set():
                raise Cancelled(f"cancelled at step {step} of {total}")
            self._channel.send(Progress(job_id=request.job_id, step=step, total=total))

        out_of_memory = False
        try:
            result = generate(request, self.registry, on_step)
        except JobFailure as failure:
            log.info("job ended: %s", failure)
            return self._error(request, failure.code, str(failure))
        except torch.cuda.OutOfMemoryError:
            log.warning("out of memory", exc_info=True)
            out_of_memory = True
        except Exception as error:
            log.exception("job failed")
            return self._error(request, ErrorCode.INTERNAL, f"{type(error).__name__}: {error}")
        if out_of_memory:
            # Outside the except block: the traceback's frames, which hold the
            # job's tensors, are gone by now, so the cache can really be emptied.
            self._free_memory()
            size = f"{request.count} image(s) at {request.width}x{request.height}"
            return self._error(
                request,
                ErrorCode.OUT_OF_MEMORY,
                f"the GPU ran out of memory making {size}; try a smaller size or fewer images",
            )
        self._faults.before_result(request, self._channel.write_raw)
        log.info("job done: %d image(s) in %.2f s", len(result.images), result.gpu_seconds)
        return result

    def _error(self, request: GenerateRequest, code: ErrorCode, message: str) -> JobError:
        return JobError(job_id=request.job_id, code=code, message=message[:MAX_ERROR_MESSAGE])

    def _free_memory(self) -> None:
        gc.collect()
        if self.registry.device.type == "cuda":
            torch.cuda.empty_cache()
