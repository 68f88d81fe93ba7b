"""The bot's handle on an engine: a batch in, every job's outcome out, progress never waited on."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from bot.config import Config
from bot.jobs.engine_client import EngineProcess
from bot.jobs.spec import Options, build_spec
from engine.protocol import ErrorCode, GenerateRequest, JobError, JobResult, Progress, batch_key


async def test_run_answers_every_job_of_a_batch_and_a_cancel_fails_only_its_job(
    config: Config, tmp_path: Path
) -> None:
    specs = {
        "keep": build_spec(Options(prompt="a fox", seed=1, steps=12), config.models, "tiny"),
        "drop": build_spec(Options(prompt="an owl", seed=7, steps=12), config.models, "tiny"),
    }
    [key] = {batch_key(spec.shared_params()) for spec in specs.values()}
    jobs = [spec.batch_job(job_id, tmp_path / job_id, tmp_path) for job_id, spec in specs.items()]
    request = GenerateRequest.for_jobs("batch-1", key, jobs)
    progress: list[Progress] = []
    started = asyncio.Event()

    def on_progress(event: Progress) -> None:
        progress.append(event)
        started.set()

    engine = EngineProcess("cpu", config.models, dict(os.environ))
    await engine.start()
    try:
        run = asyncio.create_task(engine.run(request, on_progress, time_limit=120))
        await started.wait()
        await engine.cancel("drop")
        outcomes = await run
    finally:
        await engine.stop()

    assert list(outcomes) == ["keep", "drop"]
    kept, dropped = outcomes["keep"], outcomes["drop"]
    assert isinstance(kept, JobResult) and (kept.batch_id, kept.batch_jobs) == (
        "batch-1",
        ["keep", "drop"],
    )
    assert [image.seed for image in kept.images] == [1]
    assert isinstance(dropped, JobError) and dropped.code is ErrorCode.CANCELLED
    assert [p.step for p in progress if p.job_id == "keep"] == list(range(1, 13))
    assert 1 <= len([p for p in progress if p.job_id == "drop"]) <= 3


def progress(step: int) -> Progress:
    return Progress(job_id="j", step=step, total=3)
