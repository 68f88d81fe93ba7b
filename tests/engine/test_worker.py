"""The engine process over its real pipes: handshake, jobs, refusals, cancels, faults, exit."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from engine.faults import FAULT_ENV, GARBAGE_LINE
from engine.protocol import (
    PROTOCOL_VERSION,
    CancelRequest,
    ErrorCode,
    GenerateRequest,
    JobError,
    JobResult,
    ModelSpec,
    Progress,
    SetupRequest,
    ShutdownRequest,
    Status,
    StatusRequest,
    decode_event,
    encode,
)

from .conftest import make_batch, make_request
from .harness import EngineUnderTest

# Faults aimed by prompt, so normal jobs on the same engine run as usual.
FAULTS = "oom_at_step=2@[oom];oom_if_batch_over=1@[split];garbage@[garbage]"
LONG_JOB_STEPS = 150


@pytest.fixture(scope="module")
def models(tiny_model_dir: Path) -> dict[str, ModelSpec]:
    return {"tiny": ModelSpec(source=str(tiny_model_dir))}


@pytest.fixture(scope="module")
def engine(
    models: dict[str, ModelSpec], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineUnderTest]:
    log = tmp_path_factory.mktemp("engine") / "engine.log"
    process = EngineUnderTest(log, env={FAULT_ENV: FAULTS})
    try:
        ready = process.start(models)
        assert (ready.device, ready.models, ready.version) == ("cpu", ["tiny"], PROTOCOL_VERSION)
        yield process
    finally:
        process.stop()


def request(tmp_path: Path, job_id: str, **changes: Any) -> GenerateRequest:
    return make_request(tmp_path, job_id=job_id, **changes)


def test_a_job_reports_each_step_then_its_images(engine: EngineUnderTest, tmp_path: Path) -> None:
    engine.send(request(tmp_path, "ok", count=2, steps=4, sampler="Euler"))
    *progress, result = engine.events_until_done("ok")

    assert progress == [Progress(job_id="ok", step=step, total=4) for step in (1, 2, 3, 4)]
    assert isinstance(result, JobResult)
    assert result.sampler == "Euler"
    assert [image.seed for image in result.images] == [42, 43]
    for image in result.images:
        data = Path(image.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == image.sha256
        with Image.open(image.path) as decoded:
            assert decoded.size == (64, 64)


def test_a_garbage_line_is_refused_and_the_engine_keeps_serving(
    engine: EngineUnderTest, tmp_path: Path
) -> None:
    engine.send(b"this is not a request\n")
    refusal = engine.next_event()
    assert isinstance(refusal, JobError)
    assert (refusal.job_id, refusal.code) == (None, ErrorCode.BAD_REQUEST)
    assert "Invalid JSON" in refusal.message

    engine.send(request(tmp_path, "after-garbage", steps=2))
    assert isinstance(engine.events_until_done("after-garbage")[-1], JobResult)


def test_an_invalid_request_fails_its_own_job_with_the_reason(
    engine: EngineUnderTest, tmp_path: Path
) -> None:
    line = encode(request(tmp_path, "odd-size")).replace(b'"width":64', b'"width":65')
    engine.send(line)
    refusal = engine.next_event()
    assert isinstance(refusal, JobError)
    assert (refusal.job_id, refusal.code) == ("odd-size", ErrorCode.BAD_REQUEST)
    assert "width" in refusal.message


def test_unknown_model_and_sampler_fail_only_their_jobs(
    engine: EngineUnderTest, tmp_path: Path
) -> None:
    engine.send(request(tmp_path, "no-model", model="sdxl"))
    engine.send(request(tmp_path, "no-sampler", sampler="Euler b"))
    engine.send(request(tmp_path, "fine", steps=2))
    no_model = engine.events_until_done("no-model")[-1]
    no_sampler = engine.events_until_done("no-sampler")[-1]
    assert isinstance(no_model, JobError) and no_model.code is ErrorCode.UNKNOWN_MODEL
    assert isinstance(no_sampler, JobError) and no_sampler.code is ErrorCode.BAD_REQUEST
    assert "DPM++ 2M Karras" in no_sampler.message
    assert isinstance(engine.events_until_done("fine")[-1], JobResult)


def test_cancel_stops_the_running_job_within_a_step(
    engine: EngineUnderTest, tmp_path: Path
) -> None:
    engine.send(request(tmp_path, "long", steps=LONG_JOB_STEPS, sampler="Euler"))
    first = engine.next_event()
    assert isinstance(first, Progress) and first.step == 1
    engine.send(CancelRequest(job_id="long"))
    *progress, error = engine.events_until_done("long")

    assert isinstance(error, JobError)
    assert error.code is ErrorCode.CANCELLED
    # Steps already under way when the cancel arrived may still report, no more.
    assert len(progress) <= 2
    assert list(tmp_path.iterdir()) == []


def test_cancel_drops_a_job_still_waiting_in_the_engine(
    engine: EngineUnderTest, tmp_path: Path
) -> None:
    engine.send(request(tmp_path, "running", steps=LONG_JOB_STEPS, sampler="Euler"))
    engine.send(request(tmp_path, "waiting"))
    assert isinstance(engine.next_event(), Progress)
    engine.send(CancelRequest(job_id="waiting"))
    events = engine.events_until_done("waiting")
    assert events[-1] == JobError(
        job_id="waiting", code=ErrorCode.CANCELLED, message="cancelled before it started"
    )
    assert all(isinstance(e, Progress) and e.job_id == "running" for e in events[:-1])

    engine.send(CancelRequest(job_id="running"))
    stopped = engine.events_until_done("running")[-1]
    assert isinstance(stopped, JobError) and stopped.code is ErrorCode.CANCELLED


def batch(tmp_path: Path, jobs: dict[str, dict[str, Any]], **shared: Any) -> GenerateRequest:
    """A request of several jobs, each with its own folder under `tmp_path`."""
    return make_batch(
        [
            {
                "job_id": job_id,
                "prompt": f"a picture of {job_id}",
                "seed": 1,
                "output_dir": str(tmp_path / job_id),
            }
            | fields
            for job_id, fields in jobs.items()
        ],
        **shared,
    )


def until_all_done(
    engine: EngineUnderTest, job_ids: list[str]
) -> tuple[list[Progress], dict[str, JobResult | JobError]]:
    """Progress events, then each job's outcome, once every one of `job_ids` has one."""
    progress: list[Progress] = []
    outcomes: dict[str, JobResult | JobError] = {}
    while set(outcomes) != set(job_ids):
        event = engine.next_event()
        if isinstance(event, Progress):
            progress.append(event)
        elif isinstance(event, JobResult | JobError) and event.job_id is not None:
            outcomes[event.job_id] = event
    return progress, outcomes


def test_a_batch_reports_each_step_for_every_job_then_one_result_each(
    engine: EngineUnderTest, tmp_path: Path
) -> None:
    engine.send(batch(tmp_path, {"b1": {"count": 2, "seed": 10}, "b2": {"seed": 20}}, steps=2))
    progress, outcomes = until_all_done(engine, ["b1", "b2"])

    assert [(p.job_id, p.step, p.total) for p in progress] == [
        ("b1", 1, 2),
        ("b2", 1, 2),
        ("b1", 2, 2),
        ("b2", 2, 2),
    ]
    first, second = outcomes["b1"], outcomes["b2"]
    assert isinstance(first, JobResult) and isinstance(second, JobResult)
    assert [image.seed for image in first.images] == [10, 11]
    assert [image.seed for image in second.images] == [20]
    assert Path(second.images[0].path).parent == tmp_path / "b2"
    for result in (first, second):
        assert (result.batch_id, result.batch_jobs) == ("b1-b2", ["b1", "b2"])
    assert first.gpu_seconds + second.gpu_seconds == pytest.approx(first.batch_gpu_seconds)
    assert first.gpu_seconds == pytest.approx(2 * second.gpu_seconds)


def test_cancelling_one_job_of_a_running_batch_fails_it_alone(
    engine: EngineUnderTest, tmp_path: Path
) -> None:
    engine.send(batch(tmp_path, {"keep": {}, "drop": {"seed": 2}}, steps=12, sampler="Euler"))
    first = engine.next_event()
    assert isinstance(first, Progress) and first.step == 1
    engine.send(CancelRequest(job_id="drop"))
    progress, outcomes = until_all_done(engine, ["keep", "drop"])

    dropped, kept = outcomes["drop"], outcomes["keep"]
    assert isinstance(dropped, JobError) and dropped.code is ErrorCode.CANCELLED
    assert isinstance(kept, JobResult) and len(kept.images) == 1
    assert list((tmp_path / "drop").iterdir()) == []
    # The kept job reports every step; the cancelled one stops within a step or two.
    assert [p.step for p in progress if p.job_id == "keep"] == list(range(2, 13))
    assert len([p for p in progress if p.job_id == "drop"]) <= 2


def test_cancelling_every_job_of_a_running_batch_stops_it(
    engine: EngineUnderTest, tmp_path: Path
) -> None:
    jobs = {"all1": {}, "all2": {"seed": 2}}
    engine.send(batch(tmp_path, jobs, steps=LONG_JOB_STEPS, sampler="Euler"))
    assert isinstance(engine.next_event(), Progress)
    engine.send(CancelRequest(job_id="all1"))
    engine.send(CancelRequest(job_id="all2"))
    progress, outcomes = until_all_done(engine, list(jobs))

    assert all(isinstance(o, JobError) and o.code is ErrorCode.CANCELLED for o in outcomes.values())
    assert len(progress) <= 6  # a few steps under way when the cancels came, no more
    assert [list((tmp_path / job_id).iterdir()) for job_id in jobs] == [[], []]


def test_cancelling_one_job_of_a_waiting_batch_runs_the_others(
    engine: EngineUnderTest, tmp_path: Path
) -> None:
    engine.send(request(tmp_path / "running", "busy2", steps=LONG_JOB_STEPS, sampler="Euler"))
    engine.send(batch(tmp_path, {"w1": {}, "w2": {"seed": 2}}, steps=2))
    assert isinstance(engine.next_event(), Progress)
    engine.send(CancelRequest(job_id="w1"))
    events = engine.events_until_done("w1")
    assert events[-1] == JobError(
        job_id="w1", code=ErrorCode.CANCELLED, message="cancelled before it started"
    )
    engine.send(CancelRequest(job_id="busy2"))
    stopped = engine.events_until_done("busy2")[-1]
    assert isinstance(stopped, JobError) and stopped.code is ErrorCode.CANCELLED

    *progress, result = engine.events_until_done("w2")
    assert isinstance(result, JobResult)
    assert (result.batch_id, result.batch_jobs) == ("w1-w2", ["w2"])
    assert {p.job_id for p in progress if isinstance(p, Progress)} == {"w2"}
    assert not (tmp_path / "w1").exists()


def test_out_of_memory_fails_the_job_and_the_engine_keeps_serving(
    engine: EngineUnderTest, tmp_path: Path
) -> None:
    engine.send(request(tmp_path, "big", prompt="a castle [oom]", count=4))
    error = engine.events_until_done("big")[-1]
    assert isinstance(error, JobError)
    assert error.code is ErrorCode.OUT_OF_MEMORY
    assert "4 image(s) at 64x64" in error.message and "smaller" in error.message

    engine.send(request(tmp_path, "small", steps=2))
    assert isinstance(engine.events_until_done("small")[-1], JobResult)


def test_a_batch_too_big_for_the_device_is_split_and_delivered_whole(
    engine: EngineUnderTest, tmp_path: Path
) -> None:
    engine.send(request(tmp_path, "split", prompt="a castle [split]", count=2, steps=2))
    *progress, result = engine.events_until_done("split")
    assert isinstance(result, JobResult)
    assert [image.seed for image in result.images] == [42, 43]
    assert [(p.step, p.total) for p in progress if isinstance(p, Progress)] == [
        (1, 4),
        (2, 4),
        (3, 4),
        (4, 4),
    ]


def test_status_is_answered_at_once_while_a_job_runs(
    engine: EngineUnderTest, tmp_path: Path
) -> None:
    engine.send(request(tmp_path, "busy", steps=LONG_JOB_STEPS, sampler="Euler"))
    assert isinstance(engine.next_event(), Progress)
    engine.send(StatusRequest())
    status = next(e for e in iter(engine.next_event, None) if isinstance(e, Status))
    assert status.device == "cpu"
    assert (status.running_batch, status.running_jobs) == ("busy", ["busy"])
    assert [(m.name, m.family) for m in status.loaded] == [("tiny", "sd")]
    assert status.loaded[0].memory_bytes > 1_000_000
    assert (status.memory_used_bytes, status.memory_total_bytes) == (None, None)
    engine.send(CancelRequest(job_id="busy"))
    stopped = engine.events_until_done("busy")[-1]
    assert isinstance(stopped, JobError) and stopped.code is ErrorCode.CANCELLED


def test_progress_names_a_fresh_preview_every_k_steps(
    engine: EngineUnderTest, tmp_path: Path
) -> None:
    engine.send(request(tmp_path, "previewed", steps=4, preview_every=2))
    *progress, result = engine.events_until_done("previewed")
    assert isinstance(result, JobResult)
    preview = str(tmp_path / "previewed-preview.png")
    assert [p.preview for p in progress if isinstance(p, Progress)] == [
        None,
        preview,
        None,
        preview,
    ]


def test_garbage_fault_puts_a_non_json_line_before_the_result(
    engine: EngineUnderTest, tmp_path: Path
) -> None:
    engine.send(request(tmp_path, "noisy", prompt="a bird [garbage]", steps=2))
    lines = [engine.read_line() for _ in range(4)]
    assert lines[2] == GARBAGE_LINE
    result = decode_event(lines[3])
    assert isinstance(result, JobResult) and result.job_id == "noisy"


def test_a_protocol_version_mismatch_exits_with_code_2(
    models: dict[str, ModelSpec], tmp_path: Path
) -> None:
    process = EngineUnderTest(tmp_path / "engine.log")
    try:
        process.send(SetupRequest(version=PROTOCOL_VERSION + 1, device="cpu", models=models))
        refusal = process.next_event()
        assert isinstance(refusal, JobError)
        assert (refusal.job_id, refusal.code) == (None, ErrorCode.BAD_REQUEST)
        assert f"speaks {PROTOCOL_VERSION}" in refusal.message
        assert process.wait() == 2
    finally:
        process.stop()


def test_shutdown_request_and_end_of_stdin_both_exit_0_with_stdout_unused(
    models: dict[str, ModelSpec], tmp_path: Path
) -> None:
    # Two engines at once: each spends seconds importing torch and diffusers.
    told = EngineUnderTest(tmp_path / "told.log")
    closed = EngineUnderTest(tmp_path / "closed.log")
    try:
        for process in (told, closed):
            process.send_setup(models)
        told.ready()
        closed.ready()
        told.send(ShutdownRequest())
        closed.close_stdin()
        assert (told.wait(), closed.wait()) == (0, 0)
        assert told.stdout() == closed.stdout() == b""
    finally:
        told.stop()
        closed.stop()
