"""What a job may set per image or per call beyond seed + i: --chaos (each image's
seed and cfg), --stop (decode part-way) and blended prompts (weighted embeddings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from pydantic import ValidationError

from engine.models import ModelRegistry
from engine.pipelines import generate, steps_run
from engine.protocol import BatchJob, GenerateRequest, JobResult, WeightedPrompt

from .conftest import make_request, only_result
from .test_pipelines import largest_difference, pixels


def run(registry: ModelRegistry, request: GenerateRequest) -> tuple[JobResult, list[int], list]:
    """The job's result, the images of each pipeline call, and the (step, total) reports."""
    calls: list[int] = []
    steps: list[tuple[int, int]] = []
    outcomes = generate(request, registry, lambda s, t, _: steps.append((s, t)), calls.append)
    return only_result(outcomes), calls, steps


def test_each_image_uses_its_own_seed_and_cfg_one_pipeline_call_per_cfg(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    request = make_request(
        tmp_path / "chaos", count=3, seed=10, seeds=[10, 987654, 11], cfgs=[7.0, 3.5, 7.0], steps=3
    )
    result, calls, steps = run(registry, request)
    assert calls == [2, 1]  # the two images at cfg 7 together, then the one at 3.5
    assert steps == [(step, 6) for step in range(1, 7)]
    assert [image.seed for image in result.images] == [10, 987654, 11]
    alone = only_result(
        generate(
            make_request(tmp_path / "alone", seed=987654, cfg=3.5, steps=3),
            registry,
            lambda *_: None,
        )
    )
    assert largest_difference(result.images[1].path, alone.images[0].path) <= 1
    with Image.open(result.images[1].path) as image:
        recipe = json.loads(image.text["atelier"])
        assert "CFG scale: 3.5, Seed: 987654" in image.text["parameters"]
    assert (recipe["seed"], recipe["cfg"], recipe["batch_seed"]) == (987654, 3.5, 10)


def test_a_job_names_one_seed_and_cfg_per_image_or_none() -> None:
    with pytest.raises(ValidationError, match="seeds needs one value per image"):
        BatchJob(job_id="j", prompt="p", seed=1, count=2, seeds=[1], output_dir="/tmp")
    with pytest.raises(ValidationError, match="cfgs needs one value per image"):
        BatchJob(job_id="j", prompt="p", seed=1, count=1, cfgs=[7.0, 8.0], output_dir="/tmp")


@pytest.mark.parametrize(("steps", "stop", "run_steps"), [(4, 50, 2), (10, 10, 1), (3, 100, 3)])
def test_stop_runs_that_share_of_the_steps(steps: int, stop: int, run_steps: int) -> None:
    assert steps_run(steps, stop) == run_steps


def test_a_stopped_job_reports_and_runs_only_its_steps_then_decodes_what_is_there(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    stopped, _, steps = run(registry, make_request(tmp_path / "stop", steps=4, stop=50))
    full, _, _ = run(registry, make_request(tmp_path / "full", steps=4))
    assert steps == [(1, 2), (2, 2)]
    assert pixels(stopped.images[0].path) != pixels(full.images[0].path)
    again, _, _ = run(registry, make_request(tmp_path / "again", steps=4, stop=50))
    assert pixels(again.images[0].path) == pixels(stopped.images[0].path)
    with Image.open(stopped.images[0].path) as image:
        assert json.loads(image.text["atelier"])["stop"] == 50


def blended(
    registry: ModelRegistry, folder: Path, parts: list[tuple[str, float]], prompt: str = "blend"
) -> str:
    blend = [WeightedPrompt(text=text, weight=weight) for text, weight in parts]
    return run(registry, make_request(folder, prompt=prompt, blend=blend, seed=3))[0].images[0].path


def test_blended_prompts_average_their_embeddings_by_weight(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    cube, ball = "a red cube on a table", "a blue ball in the sea"
    plain = run(registry, make_request(tmp_path / "plain", prompt=cube, seed=3))[0].images[0].path
    # The same prompt twice, any weights: its own embedding, so the plain image.
    same = blended(registry, tmp_path / "same", [(cube, 2.0), (cube, 5.0)])
    assert largest_difference(same, plain) <= 1
    mostly_cube = blended(registry, tmp_path / "cube", [(cube, 3.0), (ball, 1.0)])
    mostly_ball = blended(registry, tmp_path / "ball", [(cube, 1.0), (ball, 3.0)])
    assert largest_difference(mostly_cube, plain) > 1
    assert largest_difference(mostly_cube, mostly_ball) > 1
    # Only the ratio of the weights counts.
    scaled = blended(registry, tmp_path / "scaled", [(cube, 30.0), (ball, 10.0)])
    assert largest_difference(scaled, mostly_cube) <= 1
