"""Engine fixtures: model registries over the tiny models, input images, and requests that fit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image, ImageDraw

from engine.memory import GIB
from engine.models import ModelRegistry
from engine.pipelines import Outcome
from engine.protocol import BatchJob, ControlType, GenerateRequest, JobResult, ModelSpec


@pytest.fixture(scope="session")
def registry(tiny_model_dir: Path) -> ModelRegistry:
    return ModelRegistry({"tiny": ModelSpec(source=str(tiny_model_dir))}, torch.device("cpu"))


def studio_specs(tiny_model_set: dict[str, Path]) -> dict[str, ModelSpec]:
    """ "tiny": SD 1.5 with every extra configured; "xl": the tiny SDXL checkpoint."""
    controlnet = str(tiny_model_set["controlnet-scribble"])
    return {
        "tiny": ModelSpec(
            source=str(tiny_model_set["sd15"]),
            # One tiny ControlNet serves every type but lineart, which stays unconfigured.
            controlnets={
                ControlType.SCRIBBLE: controlnet,
                ControlType.CANNY: controlnet,
                ControlType.NONE: controlnet,
            },
            inpaint=str(tiny_model_set["inpaint"]),
            preview_decoder=str(tiny_model_set["taesd"]),
        ),
        "plain": ModelSpec(source=str(tiny_model_set["sd15"])),
        "xl": ModelSpec(source=str(tiny_model_set["sdxl"])),
    }


@pytest.fixture(scope="session")
def studio(tiny_model_set: dict[str, Path]) -> ModelRegistry:
    """Every tiny model, all resident at once (a budget far above their few MB)."""
    return ModelRegistry(studio_specs(tiny_model_set), torch.device("cpu"), memory_budget=GIB)


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Input files: a photo-like init image, a mask of another size, a scribble."""
    folder = tmp_path_factory.mktemp("inputs")
    photo = Image.new("RGB", (96, 80), (40, 90, 160))
    ImageDraw.Draw(photo).ellipse((20, 15, 70, 65), fill=(230, 200, 40))
    mask = Image.new("L", (32, 32), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, 15, 31), fill=255)
    scribble = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(scribble).line((5, 5, 60, 50), fill="black", width=3)
    other = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(other).rectangle((10, 30, 50, 40), outline="black", width=3)
    paths = {
        "photo": folder / "photo.png",
        "mask": folder / "mask.png",
        "scribble": folder / "scribble.png",
        "other_scribble": folder / "other.png",
    }
    for path, image in zip(paths.values(), (photo, mask, scribble, other), strict=True):
        image.save(path)
    return paths


def make_request(output_dir: Path, **changes: Any) -> GenerateRequest:
    """A small, fast txt2img request of one job; `changes` override any field.

    Job fields (prompt, seed, count, input images, ...) go to the one job; the
    batch is named after it.
    """
    job: dict[str, Any] = {
        "job_id": "job1",
        "prompt": "a red cube on a table",
        "seed": 42,
        "output_dir": str(output_dir),
    }
    job |= {name: value for name, value in changes.items() if name in BatchJob.model_fields}
    shared = {name: value for name, value in changes.items() if name not in job}
    return make_batch([job], **shared)


def make_batch(jobs: list[dict[str, Any]], **changes: Any) -> GenerateRequest:
    """A small, fast txt2img request of `jobs` (BatchJob fields); `changes` override the rest."""
    fields: dict[str, Any] = {
        "batch_id": "-".join(job["job_id"] for job in jobs),
        "model": "tiny",
        "width": 64,
        "height": 64,
        "steps": 4,
        "cfg": 7.0,
        "sampler": "Euler a",
        "jobs": [BatchJob(**job) for job in jobs],
    }
    return GenerateRequest(**(fields | changes))


def only_result(outcomes: list[Outcome]) -> JobResult:
    """The result of a one-job request; fails the test on anything else."""
    [outcome] = outcomes
    assert isinstance(outcome, JobResult), outcome
    return outcome
