"""A batch that does not fit is split, up front or on out-of-memory, and keeps its seeds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine import pipelines
from engine.checkpoints import Family
from engine.errors import OutOfMemory
from engine.faults import FaultPlan, parse_faults
from engine.memory import GIB, DeviceMemory, batch_peak_bytes, images_per_batch
from engine.models import ModelRegistry
from engine.pipelines import generate
from engine.protocol import ErrorCode, GenerateRequest

from .conftest import make_request, only_result
from .test_pipelines import pixels


def largest_difference(first: bytes, second: bytes) -> int:
    return max(abs(a - b) for a, b in zip(first, second, strict=True))


def run(
    registry: ModelRegistry, request: GenerateRequest, faults: str = ""
) -> tuple[list[bytes], list[int], list[tuple[int, int]]]:
    """Pixels of each image, the size of each batch tried, and the (step, total) reports."""
    plan = FaultPlan(parse_faults(faults))
    batches: list[int] = []
    steps: list[tuple[int, int]] = []

    def before_batch(size: int) -> None:
        batches.append(size)
        plan.before_batch(request, size)

    outcomes = generate(request, registry, lambda s, t, _: steps.append((s, t)), before_batch)
    return [pixels(image.path) for image in only_result(outcomes).images], batches, steps


def test_out_of_memory_splits_the_batch_and_each_image_keeps_its_seed(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    request = make_request(tmp_path / "whole", count=3, steps=2, sampler="Euler a")
    whole, whole_batches, _ = run(registry, request)
    split_request = request.model_copy(update={"output_dir": str(tmp_path / "split")})
    split, split_batches, steps = run(registry, split_request, "oom_if_batch_over=1")
    third = make_request(tmp_path / "single", seed=44, steps=2, sampler="Euler a")
    single = run(registry, third)[0][0]
    assert whole_batches == [3]
    # 3 fails, then its first half (1) fits, then the rest one at a time.
    assert split_batches == [3, 1, 1, 1]
    assert split[2] == single  # a batch of one is a single run with seed + i
    # Against the unsplit batch: the same noise, step for step, but the CPU's GEMM
    # kernels sum in another order for another row count (the UNet's time embedding
    # already differs by 1e-7 between 2 and 6 rows), which may move a channel by
    # one 8-bit level.
    for index, image in enumerate(split):
        assert largest_difference(image, whole[index]) <= 1
    assert largest_difference(split[0], split[1]) > 1
    # Progress runs on over the three batches of two steps.
    assert steps == [(step, 6) for step in range(1, 7)]


def test_one_image_that_still_does_not_fit_fails_suggesting_a_smaller_job(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    request = make_request(tmp_path, count=2, steps=2, width=128, height=64)
    plan = FaultPlan(parse_faults("oom_if_batch_over=0"))
    [outcome] = generate(
        request, registry, lambda s, t, _: None, lambda size: plan.before_batch(request, size)
    )
    assert isinstance(outcome, OutOfMemory)
    assert outcome.code is ErrorCode.OUT_OF_MEMORY
    assert "2 image(s) at 128x64" in str(outcome)
    assert "smaller size or fewer images" in str(outcome)
    assert list(tmp_path.iterdir()) == []


def test_a_batch_estimated_not_to_fit_is_split_before_it_runs(
    registry: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = batch_peak_bytes(Family.SD, 64, 64, 1, torch.float32)
    # Free memory for two images beyond the headroom kept for the allocator.
    free = GIB // 2 + 2 * one
    monkeypatch.setattr(
        pipelines, "device_memory", lambda device: DeviceMemory(used=0, total=GIB, free=free)
    )
    request = make_request(tmp_path, count=3, steps=2)
    _, batches, _ = run(registry, request)
    assert batches == [2, 1]


def test_the_estimate_grows_with_size_count_and_family() -> None:
    small = batch_peak_bytes(Family.SD, 512, 512, 1, torch.float16)
    assert batch_peak_bytes(Family.SD, 1024, 1024, 1, torch.float16) == 4 * small
    assert batch_peak_bytes(Family.SD, 512, 512, 3, torch.float16) == 3 * small
    assert batch_peak_bytes(Family.SDXL, 512, 512, 1, torch.float16) > small
    assert batch_peak_bytes(Family.SD, 512, 512, 1, torch.float32) == 2 * small
    assert images_per_batch(Family.SD, 512, 512, 4, torch.float16, None) == 4
    assert images_per_batch(Family.SD, 512, 512, 4, torch.float16, 0) == 1
