"""The test-only fault hooks parse strictly and fire only where they are aimed."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.faults import GARBAGE_LINE, Fault, FaultKind, FaultPlan, parse_faults

from .conftest import make_batch, make_request

REPO = Path(__file__).resolve().parents[2]


def test_faults_parse_with_optional_prompt_filters() -> None:
    assert parse_faults("crash_at_step=3@crash me; garbage ;") == (
        Fault(FaultKind.CRASH, 3, "crash me"),
        Fault(FaultKind.GARBAGE),
    )
    assert parse_faults("") == ()


@pytest.mark.parametrize("spec", ["crash_at_step", "explode=1", "garbage=2", "oom_at_step=x"])
def test_a_malformed_fault_is_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="fault"):
        parse_faults(spec)


def test_out_of_memory_fires_at_its_step_for_matching_prompts_only(tmp_path: Path) -> None:
    plan = FaultPlan(parse_faults("oom_at_step=2@[oom]"))
    plain = make_request(tmp_path, prompt="a cat")
    aimed = make_request(tmp_path, prompt="a cat [oom]")
    plan.at_step(plain, 2)
    plan.at_step(aimed, 1)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        plan.at_step(aimed, 2)


def test_a_fault_aimed_by_prompt_hits_a_batch_with_any_matching_job(tmp_path: Path) -> None:
    plan = FaultPlan(parse_faults("oom_if_batch_over=1@[oom]"))
    jobs = [{"job_id": "a", "prompt": "a cat", "seed": 1, "output_dir": str(tmp_path)}]
    aimed = {"job_id": "b", "prompt": "a dog [oom]", "seed": 1, "output_dir": str(tmp_path)}
    plan.before_batch(make_batch(jobs), 2)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        plan.before_batch(make_batch([*jobs, aimed]), 2)


def test_garbage_is_written_before_the_result(tmp_path: Path) -> None:
    written: list[bytes] = []
    FaultPlan(parse_faults("garbage")).before_result(make_request(tmp_path), written.append)
    assert written == [GARBAGE_LINE]


def test_crash_kills_the_process_outright() -> None:
    code = (
        "from engine.faults import FaultPlan, parse_faults\n"
        "from engine.protocol import BatchJob, GenerateRequest\n"
        "job = BatchJob(job_id='j', prompt='p', seed=1, output_dir='.')\n"
        "request = GenerateRequest(batch_id='b', model='m', width=64, height=64,"
        " steps=4, cfg=7, sampler='Euler', jobs=[job])\n"
        "FaultPlan(parse_faults('crash_at_step=3')).at_step(request, 3)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=60)
    assert done.returncode == -signal.SIGKILL
