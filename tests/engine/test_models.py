"""The model registry: lazy loading, one set of weights per checkpoint, a memory budget (LRU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers.models.attention_processor import FusedAttnProcessor2_0
from safetensors.torch import save_file

from engine.checkpoints import Family, Source, fingerprint, single_file_is_sdxl
from engine.errors import BadRequest, JobFailure, UnknownModel
from engine.memory import module_bytes
from engine.models import ModelRegistry
from engine.protocol import ControlType, Mode, ModelSpec


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
        # PyTorch's fused attention (SDPA), with q, k and v in one projection (engine.speed).
        assert all(isinstance(p, FusedAttnProcessor2_0) for p in module.attn_processors.values())
    assert pipeline._progress_bar_config == {"disable": True}


def test_a_missing_model_file_fails_with_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.safetensors"
    models = ModelRegistry({"gone": ModelSpec(source=str(missing))}, torch.device("cpu"))
    with pytest.raises(JobFailure, match=r"could not be loaded.*missing\.safetensors"):
        models.get("gone")


def data_pointers(module: torch.nn.Module) -> list[int]:
    return [parameter.data_ptr() for parameter in module.parameters()]


@pytest.mark.parametrize(
    ("mode", "control_type"),
    [(Mode.IMG2IMG, ControlType.CANNY), (Mode.CONTROLNET, ControlType.SCRIBBLE)],
)
def test_every_mode_shares_the_checkpoints_weights(
    mode: Mode, control_type: ControlType, studio: ModelRegistry
) -> None:
    model = studio.get("tiny")
    base = model.pipeline
    other = model.pipeline_for(mode, control_type)
    assert other is not base
    for name in ("unet", "vae", "text_encoder", "tokenizer"):
        assert getattr(other, name) is getattr(base, name), name
    assert data_pointers(other.unet) == data_pointers(base.unet)
    assert data_pointers(other.text_encoder) == data_pointers(base.text_encoder)
    assert model.pipeline_for(mode, control_type) is other  # built once


def test_plain_inpainting_shares_the_unet_and_a_dedicated_checkpoint_only_adds_its_own(
    studio: ModelRegistry,
) -> None:
    plain = studio.get("plain")
    assert plain.pipeline_for(Mode.INPAINT, ControlType.CANNY).unet is plain.pipeline.unet
    tiny = studio.get("tiny")
    inpaint = tiny.pipeline_for(Mode.INPAINT, ControlType.CANNY)
    assert inpaint.unet is tiny.inpaint_unet
    assert inpaint.unet.config.in_channels == 9
    assert inpaint.vae is tiny.pipeline.vae and inpaint.text_encoder is tiny.pipeline.text_encoder


@pytest.mark.parametrize("model", ["plain", "tiny"])
def test_outpainting_runs_on_the_models_own_inpainting_pipeline(
    model: str, studio: ModelRegistry
) -> None:
    loaded = studio.get(model)
    outpaint = loaded.pipeline_for(Mode.OUTPAINT, ControlType.CANNY)
    assert outpaint is loaded.pipeline_for(Mode.INPAINT, ControlType.CANNY)
    assert outpaint.vae is loaded.pipeline.vae


def test_controlnet_pipelines_use_the_controlnet_configured_for_their_type(
    studio: ModelRegistry,
) -> None:
    tiny = studio.get("tiny")
    scribble = tiny.pipeline_for(Mode.CONTROLNET, ControlType.SCRIBBLE)
    assert scribble.controlnet is tiny.controlnets[ControlType.SCRIBBLE]


def test_a_control_type_without_a_controlnet_is_a_bad_request_naming_it(
    studio: ModelRegistry,
) -> None:
    with pytest.raises(BadRequest, match=r"'tiny' has no ControlNet for control type 'lineart'"):
        studio.get("tiny").pipeline_for(Mode.CONTROLNET, ControlType.LINEART)
    with pytest.raises(BadRequest, match=r"configured: none"):
        studio.get("plain").pipeline_for(Mode.CONTROLNET, ControlType.CANNY)


def test_the_family_is_read_from_the_checkpoint(studio: ModelRegistry) -> None:
    assert studio.get("tiny").family is Family.SD
    xl = studio.get("xl")
    assert xl.family is Family.SDXL
    assert xl.pipeline.text_encoder_2 is not None


def test_a_single_file_checkpoint_is_recognised_as_sdxl_by_its_tensor_names(
    tmp_path: Path,
) -> None:
    sd = tmp_path / "sd.safetensors"
    xl = tmp_path / "xl.safetensors"
    save_file({"cond_stage_model.transformer.x": torch.zeros(1)}, sd)
    save_file(
        {
            "conditioner.embedders.0.x": torch.zeros(1),
            "conditioner.embedders.1.model.x": torch.zeros(1),
        },
        xl,
    )
    assert not single_file_is_sdxl(sd)
    assert single_file_is_sdxl(xl)


def test_the_checkpoint_fingerprint_changes_with_its_weights(
    studio: ModelRegistry, tiny_model_set: dict[str, Path]
) -> None:
    tiny = studio.get("tiny")
    assert tiny.checkpoint_sha256 == fingerprint(Source(str(tiny_model_set["sd15"])))
    assert len(tiny.checkpoint_sha256) == 64
    assert studio.get("xl").checkpoint_sha256 != tiny.checkpoint_sha256


def test_models_are_kept_within_the_memory_budget_least_recently_used_out(
    tiny_model_dir: Path,
) -> None:
    spec = ModelSpec(source=str(tiny_model_dir))
    one = ModelRegistry({"a": spec}, torch.device("cpu")).get("a").memory_bytes
    # Room for two tiny models, not three.
    models = ModelRegistry(
        {"a": spec, "b": spec, "c": spec}, torch.device("cpu"), memory_budget=int(one * 2.5)
    )
    first = models.get("a")
    models.get("b")
    assert models.resident == ["a", "b"]
    assert models.get("a") is first  # a hit: now the most recent
    models.get("c")
    assert models.resident == ["a", "c"]
    assert [(name, family) for name, family, _ in models.resident_models()] == [
        ("a", Family.SD),
        ("c", Family.SD),
    ]
    assert all(size == one for _, _, size in models.resident_models())


def test_memory_bytes_count_each_shared_tensor_once(studio: ModelRegistry) -> None:
    tiny = studio.get("tiny")
    tiny.pipeline_for(Mode.IMG2IMG, ControlType.CANNY)
    unet = tiny.pipeline.unet
    assert module_bytes([unet, unet]) == module_bytes([unet])
    expected = module_bytes(
        [
            tiny.pipeline.unet,
            tiny.pipeline.vae,
            tiny.pipeline.text_encoder,
            tiny.controlnets[ControlType.SCRIBBLE],
            tiny.controlnets[ControlType.CANNY],
            tiny.controlnets[ControlType.NONE],
            *(m for m in (tiny.inpaint_unet, tiny.preview_decoder) if m is not None),
        ]
    )
    assert tiny.memory_bytes == expected
