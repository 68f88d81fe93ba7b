"""Runs one batch at a time and turns every way each of its jobs can end into one protocol event."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch

from engine.errors import BadRequest, Cancelled, InputFlagged, JobFailure
from engine.faults import FaultPlan
from engine.memory import device_memory, resolve_budget
from engine.models import ModelRegistry
from engine.nvml import gpu_usage
from engine.pipelines import CancelledJobs, generate
from engine.protocol import (
    ErrorCode,
    GenerateRequest,
    ImageVerdict,
    JobError,
    JobResult,
    LoadedModel,
    Progress,
    SetupRequest,
    Status,
)
from engine.safety import load_classifier
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
            setup.models,
            device,
            resolve_budget(setup.model_memory_gb, device),
            setup.speed,
            loras=setup.loras,
        )
        # Loaded at setup, so a missing package refuses the engine rather than a job.
        self.classifier = load_classifier(setup.classifier)
        self._device_name = setup.device
        self._channel = channel
        self._faults = faults

    def warm_up(self) -> None:
        """Compile and run the warm-up model now (with `[engine] compile`); BadRequest,
        naming the setting to change, if that fails."""
        try:
            self.registry.warm_up()
        except Exception as error:
            log.exception("warm-up failed")
            raise BadRequest(
                f"the compile warm-up failed ({type(error).__name__}: {error});"
                " set [engine] compile = false to run uncompiled"
            ) from error

    def status(self, running_batch: GenerateRequest | None) -> Status:
        """What the engine holds now; safe to call from another thread while a batch runs."""
        memory = device_memory(self.registry.device)
        return Status(
            device=self._device_name,
            loaded=[
                LoadedModel(name=name, family=family, memory_bytes=size)
                for name, family, size in self.registry.resident_models()
            ],
            running_batch=None if running_batch is None else running_batch.batch_id,
            running_jobs=[] if running_batch is None else running_batch.job_ids,
            memory_used_bytes=None if memory is None else memory.used,
            memory_total_bytes=None if memory is None else memory.total,
            **gpu_usage(self._device_name),
        )

    def run(self, request: GenerateRequest, cancelled: CancelledJobs) -> list[JobResult | JobError]:
        """Run a batch, sending progress for each job; one outcome per job, in request order.

        `cancelled` names the jobs cancelled so far; it is asked before each pipeline
        call and after every step. A cancelled job is answered as cancelled even
        when the batch then fails for another reason.
        """

        def on_step(step: int, total: int, previews: Mapping[str, str | None]) -> None:
            self._faults.at_step(request, step)
            for job_id, preview in previews.items():
                self._channel.send(Progress(job_id=job_id, step=step, total=total, preview=preview))

        def before_batch(size: int) -> None:
            self._faults.before_batch(request, size)

        out_of_memory = False
        try:
            outcomes = generate(
                request, self.registry, on_step, before_batch, cancelled, self.classifier
            )
        except JobFailure as failure:
            log.info("batch ended: %s", failure)
            used = failure.used if isinstance(failure, Cancelled) else {}
            return self._errors(request, cancelled, failure.code, str(failure), used)
        except torch.cuda.OutOfMemoryError:
            log.warning("out of memory", exc_info=True)
            out_of_memory = True
        except Exception as error:
            log.exception("batch failed")
            return self._errors(
                request, cancelled, ErrorCode.INTERNAL, f"{type(error).__name__}: {error}"
            )
        if out_of_memory:
            # Batches split themselves on out-of-memory; this one came from elsewhere
            # (loading a model). Freed outside the except block, whose traceback
            # frames hold the tensors.
            self.registry.free_memory()
            return self._errors(
                request,
                cancelled,
                ErrorCode.OUT_OF_MEMORY,
                f"the GPU ran out of memory loading model {request.model!r};"
                " try again when fewer models are in use",
            )
        self._faults.before_result(request, self._channel.write_raw)
        events: list[JobResult | JobError] = []
        for job_id, outcome in zip(request.job_ids, outcomes, strict=True):
            if isinstance(outcome, JobResult):
                flagged = sum(1 for i in outcome.images if i.verdict and i.verdict.flagged)
                log.info(
                    "job %s done: %d image(s) (%d flagged), %.2f of the batch's %.2f s",
                    job_id,
                    len(outcome.images),
                    flagged,
                    outcome.gpu_seconds,
                    outcome.batch_gpu_seconds,
                )
                events.append(outcome)
            else:
                log.info("job %s ended: %s", job_id, outcome)
                verdicts = outcome.verdicts if isinstance(outcome, InputFlagged) else {}
                seconds = outcome.used.get(job_id, 0.0) if isinstance(outcome, Cancelled) else 0.0
                events.append(self._error(job_id, outcome.code, str(outcome), verdicts, seconds))
        return events

    def _errors(
        self,
        request: GenerateRequest,
        cancelled: CancelledJobs,
        code: ErrorCode,
        message: str,
        used: dict[str, float] | None = None,
    ) -> list[JobResult | JobError]:
        """The same error for every job of the batch, but cancelled for those cancelled;
        `used`: the GPU seconds of jobs cancelled mid-run."""
        gone, used = cancelled(), used or {}
        return [
            self._error(job_id, ErrorCode.CANCELLED, "cancelled")
            if job_id in gone and code is not ErrorCode.CANCELLED
            else self._error(job_id, code, message, gpu_seconds=used.get(job_id, 0.0))
            for job_id in request.job_ids
        ]

    def _error(
        self,
        job_id: str,
        code: ErrorCode,
        message: str,
        verdicts: dict[str, ImageVerdict] | None = None,
        gpu_seconds: float = 0.0,
    ) -> JobError:
        return JobError(
            job_id=job_id,
            code=code,
            message=message[:MAX_ERROR_MESSAGE],
            verdicts=verdicts or {},
            gpu_seconds=gpu_seconds,
        )
