"""The model registry: lazy loading by name, one resident model, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from engine.errors import JobFailure, UnknownModel
from engine.models import ModelRegistry
from engine.protocol import ModelSpec


def test_unknown_model_error_names_the_configured_models(registry: ModelRegistry) -> None:
    with pytest.raises(UnknownModel, match=r"'nope'.*tiny"):
        registry.get("nope")


def test_models_load_on_first_use_and_the_least_recent_is_unloaded(
    tiny_model_dir: Path,
) -> None:
    spec = ModelSpec(source=str(tiny_model_dir))
    models = ModelRegistry({"a": spec, "b": spec}, torch.device("cpu"))
    assert models.resident == []
    first = models.get("a")
    assert models.get("a") is first
    models.get("b")
    assert models.resident == ["b"]


def test_a_loaded_model_is_float32_with_fused_attention_and_no_progress_bars_on_cpu(
    registry: ModelRegistry,
) -> None:
    model = registry.get("tiny")
    pipeline = model.pipeline
    assert model.dtype == torch.float32
    assert pipeline.unet.dtype == torch.float32
    for module in (pipeline.unet, pipeline.vae):
        assert all(isinstance(p, AttnProcessor2_0) for p in module.attn_processors.values())
    assert pipeline._progress_bar_config == {"disable": True}


def test_a_missing_model_file_fails_with_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.safetensors"
    models = ModelRegistry({"gone": ModelSpec(source=str(missing))}, torch.device("cpu"))
    with pytest.raises(JobFailure, match=r"could not be loaded.*missing\.safetensors"):
        models.get("gone")
