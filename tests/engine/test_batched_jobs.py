"""Several jobs in one request: one pipeline call, yet each job's own pixels, files and share."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from engine import pipelines
from engine.checkpoints import Family
from engine.errors import BadRequest, Cancelled, OutOfMemory
from engine.faults import FaultPlan, parse_faults
from engine.memory import GIB, DeviceMemory, batch_peak_bytes
from engine.models import ModelRegistry
from engine.pipelines import Outcome, generate
from engine.protocol import JobResult, Mode

from .conftest import make_batch, make_request, only_result
from .test_pipelines import largest_difference, no_progress, pixels

# Three jobs that share one pipeline call: other prompts, negatives, seeds and counts.
JOBS: list[dict[str, Any]] = [
    {"job_id": "a", "prompt": "a red cube on a table", "seed": 5, "count": 2},
    {"job_id": "b", "prompt": "a blue ball", "negative_prompt": "blurry", "seed": 100},
    {"job_id": "c", "prompt": "a green tree in fog", "seed": 7, "count": 2},
]
STEPS = 3


def results(outcomes: list[Outcome]) -> dict[str, JobResult]:
    assert all(isinstance(outcome, JobResult) for outcome in outcomes), outcomes
    return {outcome.job_id: outcome for outcome in outcomes if isinstance(outcome, JobResult)}


def with_dirs(jobs: list[dict[str, Any]], root: Path) -> list[dict[str, Any]]:
    """Each job writing into its own folder, as the bot lays them out."""
    return [job | {"output_dir": str(root / job["job_id"])} for job in jobs]


def run_alone(registry: ModelRegistry, root: Path, job: dict[str, Any], **shared: Any) -> JobResult:
    """The same job as a request of its own."""
    request = make_batch(with_dirs([job], root / "alone"), **shared)
    return only_result(generate(request, registry, no_progress))


def assert_like_unbatched(batched: JobResult, alone: JobResult) -> None:
    # The documented bound: the same noise step for step, but the CPU kernels sum in
    # another order for another row count, which may move a channel by one 8-bit level.
    assert [image.seed for image in batched.images] == [image.seed for image in alone.images]
    for mine, single in zip(batched.images, alone.images, strict=True):
        assert largest_difference(mine.path, single.path) <= 1


@pytest.fixture(scope="module")
def batched(
    registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, JobResult]:
    root = tmp_path_factory.mktemp("batched")
    request = make_batch(with_dirs(JOBS, root), steps=STEPS)
    return results(generate(request, registry, no_progress))


def test_each_job_of_a_batch_matches_an_unbatched_run_of_its_seeds(
    batched: dict[str, JobResult], registry: ModelRegistry, tmp_path: Path
) -> None:
    for job in JOBS:
        assert_like_unbatched(
            batched[job["job_id"]], run_alone(registry, tmp_path, job, steps=STEPS)
        )
    # The prompts matter: the jobs' first images are not one picture.
    a, b, c = (batched[name].images[0].path for name in "abc")
    assert largest_difference(a, b) > 1 and largest_difference(b, c) > 1


def test_each_job_gets_its_own_files_seeds_and_recipe(
    batched: dict[str, JobResult],
) -> None:
    for job in JOBS:
        result = batched[job["job_id"]]
        count = job.get("count", 1)
        assert [image.seed for image in result.images] == [job["seed"] + i for i in range(count)]
        folder = Path(result.images[0].path).parent
        assert sorted(p.name for p in folder.iterdir()) == [
            f"{job['job_id']}-{i}.png" for i in range(count)
        ]
        for index, image in enumerate(result.images):
            assert image.recipe["prompt"] == job["prompt"]
            assert image.recipe["negative_prompt"] == job.get("negative_prompt", "")
            assert (image.recipe["job_id"], image.recipe["index"]) == (job["job_id"], index)
            assert "batch_id" not in image.recipe and "jobs" not in image.recipe


def test_gpu_seconds_are_shared_in_proportion_to_images_and_sum_to_the_batch(
    batched: dict[str, JobResult],
) -> None:
    batch_seconds = {result.batch_gpu_seconds for result in batched.values()}
    assert len(batch_seconds) == 1
    [total] = batch_seconds
    assert total > 0
    assert sum(result.gpu_seconds for result in batched.values()) == pytest.approx(total)
    for result in batched.values():
        assert result.gpu_seconds == pytest.approx(total * len(result.images) / 5)
        # The engine's batch record, on every job's result.
        assert (result.batch_id, result.batch_jobs) == ("a-b-c", ["a", "b", "c"])


def test_sdxl_jobs_with_and_without_a_negative_prompt_batch_like_single_runs(
    studio: ModelRegistry, tmp_path: Path
) -> None:
    # SDXL encodes a missing negative prompt as zeros, unlike "": each job keeps its own.
    jobs = JOBS[:2]
    request = make_batch(with_dirs(jobs, tmp_path / "batch"), model="xl", steps=2)
    batch = results(generate(request, studio, no_progress))
    for job in jobs:
        alone = run_alone(studio, tmp_path, job, model="xl", steps=2)
        assert_like_unbatched(batch[job["job_id"]], alone)


@pytest.mark.parametrize(
    ("mode", "inputs"),
    [
        (Mode.IMG2IMG, {"a": {"init_image": "photo"}, "b": {"init_image": "scribble"}}),
        (
            Mode.INPAINT,
            {
                "a": {"init_image": "photo", "mask_image": "mask"},
                "b": {"init_image": "scribble", "mask_image": "mask"},
            },
        ),
        (
            Mode.CONTROLNET,
            {"a": {"control_image": "scribble"}, "b": {"control_image": "other_scribble"}},
        ),
    ],
)
def test_jobs_with_their_own_input_images_batch_like_single_runs(
    mode: Mode,
    inputs: dict[str, dict[str, str]],
    studio: ModelRegistry,
    images: dict[str, Path],
    tmp_path: Path,
) -> None:
    jobs = [
        {"job_id": name, "prompt": f"a picture {name}", "seed": seed, "count": count}
        | {field: str(images[image]) for field, image in inputs[name].items()}
        for name, seed, count in (("a", 3, 2), ("b", 50, 1))
    ]
    shared = {"mode": mode, "steps": 2, "strength": 1.0}
    if mode is Mode.CONTROLNET:
        shared["control_type"] = "scribble"
    request = make_batch(with_dirs(jobs, tmp_path / "batch"), **shared)
    batch = results(generate(request, studio, no_progress))
    for job in jobs:
        assert_like_unbatched(batch[job["job_id"]], run_alone(studio, tmp_path, job, **shared))
    # Each job's input steered its own images only.
    first_a, first_b = batch["a"].images[0], batch["b"].images[0]
    assert largest_difference(first_a.path, first_b.path) > 1
    assert first_a.recipe["inputs"] != first_b.recipe["inputs"]


class CancelAt:
    """Cancels `job_id` once the batch reaches `step` (as the engine's reader thread would)."""

    def __init__(self, job_id: str, step: int) -> None:
        self.job_id, self.step = job_id, step
        self.gone: set[str] = set()
        self.reports: list[tuple[int, list[str]]] = []

    def on_step(self, step: int, total: int, previews: Mapping[str, str | None]) -> None:
        self.reports.append((step, list(previews)))
        if step == self.step:
            self.gone.add(self.job_id)

    def cancelled(self) -> set[str]:
        return set(self.gone)


def test_cancelling_one_job_skips_its_chunks_not_yet_run_and_the_others_finish(
    registry: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Memory for one image at a time: chunks [a0], [b0], [b1], [c0] of two steps each.
    one = batch_peak_bytes(Family.SD, 64, 64, 1, torch.float32)
    monkeypatch.setattr(
        pipelines, "device_memory", lambda _: DeviceMemory(used=0, total=GIB, free=GIB // 2 + one)
    )
    jobs = with_dirs(
        [
            {"job_id": "a", "prompt": "x", "seed": 1},
            {"job_id": "b", "prompt": "y", "seed": 2, "count": 2},
            {"job_id": "c", "prompt": "z", "seed": 3},
        ],
        tmp_path,
    )
    chunks: list[int] = []
    cancel = CancelAt("b", step=3)  # b0's first step
    outcomes = generate(
        make_batch(jobs, steps=2), registry, cancel.on_step, chunks.append, cancel.cancelled
    )

    a, b, c = outcomes
    assert isinstance(b, Cancelled)
    assert isinstance(a, JobResult) and isinstance(c, JobResult)
    # b0 stopped before its decode and b1 never ran: three calls, not four.
    assert chunks == [1, 1, 1]
    assert list((tmp_path / "b").iterdir()) == []
    assert [names for _, names in cancel.reports] == [["a", "b", "c"]] * 3 + [["a", "c"]] * 2
    # One image per call is a single run: c's image is exactly c's own run.
    alone = run_alone(registry, tmp_path, jobs[2], steps=2)
    assert pixels(c.images[0].path) == pixels(alone.images[0].path)
    # b's stopped step is its own share (charged to b), not a's or c's.
    assert c.gpu_seconds == pytest.approx(c.batch_gpu_seconds / 3)
    assert b.used == {"b": pytest.approx(c.batch_gpu_seconds / 3)}


def test_cancelling_one_job_of_a_running_call_discards_its_images_only(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    jobs = with_dirs(
        [{"job_id": "a", "prompt": "x", "seed": 1}, {"job_id": "b", "prompt": "y", "seed": 2}],
        tmp_path,
    )
    cancel = CancelAt("b", step=1)
    a, b = generate(make_batch(jobs, steps=3), registry, cancel.on_step, None, cancel.cancelled)

    assert isinstance(b, Cancelled)
    assert isinstance(a, JobResult)
    assert list((tmp_path / "b").iterdir()) == []
    assert [names for _, names in cancel.reports] == [["a", "b"], ["a"], ["a"]]
    assert_like_unbatched(a, run_alone(registry, tmp_path, jobs[0], steps=3))
    # b's image ran to the end and was thrown away: that half is b's, refunded.
    assert a.gpu_seconds == pytest.approx(a.batch_gpu_seconds / 2)


def test_cancelling_every_job_stops_the_call_before_the_decode(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    jobs = with_dirs(
        [{"job_id": "a", "prompt": "x", "seed": 1}, {"job_id": "b", "prompt": "y", "seed": 2}],
        tmp_path,
    )
    gone: set[str] = set()
    steps: list[int] = []

    def on_step(step: int, total: int, previews: Mapping[str, str | None]) -> None:
        steps.append(step)
        gone.update({"a", "b"})

    with pytest.raises(Cancelled, match="step 2 of 4") as stopped:
        generate(make_batch(jobs), registry, on_step, None, lambda: gone)
    assert steps == [1]
    # The step each ran is their own: an equal share each (one image each).
    assert set(stopped.value.used) == {"a", "b"} and stopped.value.used["a"] > 0
    assert stopped.value.used["a"] == pytest.approx(stopped.value.used["b"])
    assert [list(folder.iterdir()) for folder in tmp_path.iterdir()] == [[], []]


def test_a_job_whose_own_input_is_unreadable_fails_alone(
    registry: ModelRegistry, images: dict[str, Path], tmp_path: Path
) -> None:
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    jobs = with_dirs(
        [
            {"job_id": "a", "prompt": "x", "seed": 1, "init_image": str(images["photo"])},
            {"job_id": "b", "prompt": "y", "seed": 2, "init_image": str(not_an_image)},
        ],
        tmp_path,
    )
    a, b = generate(make_batch(jobs, mode=Mode.IMG2IMG, steps=2), registry, no_progress)
    assert isinstance(a, JobResult) and a.gpu_seconds == pytest.approx(a.batch_gpu_seconds)
    assert isinstance(b, BadRequest) and "image could not be read" in str(b)


def test_a_one_job_request_is_a_batch_of_one(registry: ModelRegistry, tmp_path: Path) -> None:
    result = only_result(generate(make_request(tmp_path, steps=2), registry, no_progress))
    assert (result.batch_id, result.batch_jobs) == ("job1", ["job1"])
    assert result.gpu_seconds == result.batch_gpu_seconds


def test_each_job_of_a_batch_gets_a_preview_of_its_own_image(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    jobs = with_dirs(
        [{"job_id": "a", "prompt": "x", "seed": 1}, {"job_id": "b", "prompt": "y", "seed": 2}],
        tmp_path,
    )
    seen: list[dict[str, str | None]] = []
    contents: list[tuple[bytes, bytes]] = []

    def on_step(step: int, total: int, previews: Mapping[str, str | None]) -> None:
        seen.append(dict(previews))
        if (a := previews["a"]) is not None and (b := previews["b"]) is not None:
            contents.append((Path(a).read_bytes(), Path(b).read_bytes()))

    generate(make_batch(jobs, preview_every=2), registry, on_step)
    own = {name: str(tmp_path / name / f"{name}-preview.png") for name in "ab"}
    assert seen == [{"a": None, "b": None}, own, {"a": None, "b": None}, own]
    assert all(a != b for a, b in contents) and len(contents) == 2
    assert not any(Path(path).exists() for path in own.values())


def test_a_cancelled_job_stays_cancelled_when_the_rest_of_its_batch_runs_out_of_memory(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    jobs = with_dirs(
        [{"job_id": "a", "prompt": "x", "seed": 1}, {"job_id": "b", "prompt": "y", "seed": 2}],
        tmp_path,
    )
    request = make_batch(jobs, steps=2)
    plan = FaultPlan(parse_faults("oom_if_batch_over=0"))
    sizes: list[int] = []

    def before_batch(size: int) -> None:
        sizes.append(size)
        plan.before_batch(request, size)

    a, b = generate(request, registry, no_progress, before_batch, lambda: {"b"})
    assert isinstance(a, OutOfMemory) and "1 image(s) at 64x64" in str(a)
    assert isinstance(b, Cancelled)
    assert sizes == [1]  # b's image never went into a call
