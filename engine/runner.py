"""Runs one job at a time and turns every way it can end into one protocol event."""

from __future__ import annotations

import logging
import threading

import torch

from engine.errors import BadRequest, Cancelled, JobFailure
from engine.faults import FaultPlan
from engine.memory import device_memory, resolve_budget
from engine.models import ModelRegistry
from engine.nvml import gpu_usage
from engine.pipelines import generate
from engine.protocol import (
    ErrorCode,
    GenerateRequest,
    JobError,
    JobResult,
    LoadedModel,
    Progress,
    SetupRequest,
    Status,
)
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
        device = resolve_device(setup.device)
        self.registry = ModelRegistry(
            setup.models, device, resolve_budget(setup.model_memory_gb, device)
        )
        self._device_name = setup.device
        self._channel = channel
        self._faults = faults

    def status(self, running_job: str | None) -> Status:
        """What the engine holds now; safe to call from another thread while a job runs."""
        memory = device_memory(self.registry.device)
        return Status(
            device=self._device_name,
            loaded=[
                LoadedModel(name=name, family=family, memory_bytes=size)
                for name, family, size in self.registry.resident_models()
            ],
            running_job=running_job,
            memory_used_bytes=None if memory is None else memory.used,
            memory_total_bytes=None if memory is None else memory.total,
            **gpu_usage(self._device_name),
        )

    def run(self, request: GenerateRequest, cancel: threading.Event) -> JobResult | JobError:
        """Run `request`, sending progress; `cancel` is checked after every step."""

        def on_step(step: int, total: int, preview: str | None) -> None:
            self._faults.at_step(request, step)
            if cancel.is_set():
                raise Cancelled(f"cancelled at step {step} of {total}")
            self._channel.send(
                Progress(job_id=request.job_id, step=step, total=total, preview=preview)
            )

        def before_batch(size: int) -> None:
            self._faults.before_batch(request, size)

        out_of_memory = False
        try:
            result = generate(request, self.registry, on_step, before_batch)
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
            # Batches split themselves on out-of-memory; this one came from elsewhere
            # (loading a model). Freed outside the except block, whose traceback
            # frames hold the tensors.
            self.registry.free_memory()
            return self._error(
                request,
                ErrorCode.OUT_OF_MEMORY,
                f"the GPU ran out of memory loading model {request.model!r};"
                " try again when fewer models are in use",
            )
        self._faults.before_result(request, self._channel.write_raw)
        log.info("job done: %d image(s) in %.2f s", len(result.images), result.gpu_seconds)
        return result

    def _error(self, request: GenerateRequest, code: ErrorCode, message: str) -> JobError:
        return JobError(job_id=request.job_id, code=code, message=message[:MAX_ERROR_MESSAGE])
