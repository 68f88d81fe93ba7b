"""Engine fixtures: a model registry over the tiny model, and requests that fit it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from engine.models import ModelRegistry
from engine.protocol import GenerateRequest, ModelSpec


@pytest.fixture(scope="session")
def registry(tiny_model_dir: Path) -> ModelRegistry:
    return ModelRegistry({"tiny": ModelSpec(source=str(tiny_model_dir))}, torch.device("cpu"))


def make_request(output_dir: Path, **changes: Any) -> GenerateRequest:
    """A small, fast txt2img request; `changes` override any field."""
    fields: dict[str, Any] = {
        "job_id": "job1",
        "model": "tiny",
        "prompt": "a red cube on a table",
        "width": 64,
        "height": 64,
        "steps": 4,
        "cfg": 7.0,
        "sampler": "Euler a",
        "seed": 42,
        "output_dir": str(output_dir),
    }
    return GenerateRequest(**(fields | changes))
