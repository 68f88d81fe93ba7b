"""The tiny test models are real diffusers folders that load like any other model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from diffusers.models.controlnets.controlnet import ControlNetModel
from transformers import CLIPTokenizer

from engine.tiny import TINY_SET, TOKENIZER_MAX_LENGTH, main


def folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def test_tiny_model_is_a_small_diffusers_folder(tiny_model_dir: Path) -> None:
    index = json.loads((tiny_model_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["safety_checker"] == [None, None]
    weights = list(tiny_model_dir.rglob("*.safetensors"))
    assert {path.parent.name for path in weights} == {"unet", "vae", "text_encoder"}
    assert folder_size(tiny_model_dir) < 10_000_000


def test_tiny_tokenizer_encodes_any_text_within_clip_length(tiny_model_dir: Path) -> None:
    tokenizer = CLIPTokenizer.from_pretrained(tiny_model_dir / "tokenizer")
    assert tokenizer.model_max_length == TOKENIZER_MAX_LENGTH
    ids = tokenizer("a café ☕ " * 40, truncation=True, padding="max_length").input_ids
    assert len(ids) == TOKENIZER_MAX_LENGTH
    assert ids[0] == tokenizer.bos_token_id
    # Unknown symbols would map to <|endoftext|> too: the first one must be the final token.
    assert ids.index(tokenizer.eos_token_id) == TOKENIZER_MAX_LENGTH - 1


def test_the_tiny_set_holds_sdxl_inpainting_controlnet_and_preview_models(
    tiny_model_set: dict[str, Path],
) -> None:
    assert set(tiny_model_set) == set(TINY_SET)
    sdxl = json.loads((tiny_model_set["sdxl"] / "model_index.json").read_text())
    assert sdxl["_class_name"] == "StableDiffusionXLPipeline"
    assert sdxl["text_encoder_2"] == ["transformers", "CLIPTextModelWithProjection"]
    unet = json.loads((tiny_model_set["sdxl"] / "unet" / "config.json").read_text())
    assert unet["addition_embed_type"] == "text_time"
    inpaint = json.loads((tiny_model_set["inpaint"] / "unet" / "config.json").read_text())
    assert inpaint["in_channels"] == 9
    taesd = json.loads((tiny_model_set["taesd"] / "config.json").read_text())
    assert taesd["_class_name"] == "AutoencoderTiny"
    controlnet = ControlNetModel.from_pretrained(tiny_model_set["controlnet-scribble"])
    assert any(bool(block.weight.abs().sum()) for block in controlnet.controlnet_down_blocks)
    assert all(folder_size(folder) < 12_000_000 for folder in tiny_model_set.values())


def test_the_cli_writes_the_whole_set_one_folder_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["--all", str(tmp_path)])
    assert capsys.readouterr().out.split() == [str(tmp_path / name) for name in TINY_SET]
    for name in TINY_SET:
        assert any((tmp_path / name).rglob("*.safetensors")), name
