"""The tiny test model is a real diffusers folder that loads like any other model."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import CLIPTokenizer

from engine.tiny import TOKENIZER_MAX_LENGTH


def test_tiny_model_is_a_small_diffusers_folder(tiny_model_dir: Path) -> None:
    index = json.loads((tiny_model_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["safety_checker"] == [None, None]
    weights = list(tiny_model_dir.rglob("*.safetensors"))
    assert {path.parent.name for path in weights} == {"unet", "vae", "text_encoder"}
    size = sum(path.stat().st_size for path in tiny_model_dir.rglob("*") if path.is_file())
    assert size < 10_000_000


def test_tiny_tokenizer_encodes_any_text_within_clip_length(tiny_model_dir: Path) -> None:
    tokenizer = CLIPTokenizer.from_pretrained(tiny_model_dir / "tokenizer")
    assert tokenizer.model_max_length == TOKENIZER_MAX_LENGTH
    ids = tokenizer("a café ☕ " * 40, truncation=True, padding="max_length").input_ids
    assert len(ids) == TOKENIZER_MAX_LENGTH
    assert ids[0] == tokenizer.bos_token_id
    # Unknown symbols would map to <|endoftext|> too: the first one must be the final token.
    assert ids.index(tokenizer.eos_token_id) == TOKENIZER_MAX_LENGTH - 1
