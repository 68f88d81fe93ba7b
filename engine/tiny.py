"""Tiny random-weight Stable Diffusion pipelines for tests, built offline from config.

The components follow diffusers' own test fixtures (a fixed seed, a few
channels, a 5-layer text encoder), so a whole pipeline is about 8 MB, loads
in a fraction of a second and makes a 64x64 image on CPU in well under a
second. They are saved with `save_pretrained` and loaded back through the
same `from_pretrained` path real models use.

    python -m engine.tiny DIR
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
    StableDiffusionPipeline,
)
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from tokenizers import pre_tokenizers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

SEED = 0
TOKENIZER_MAX_LENGTH = 77
HIDDEN_SIZE = 32
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def write_byte_tokenizer_files(directory: Path) -> None:
    """A byte-level CLIP vocabulary with no merges: every byte is one token.

    The hub's tiny test tokenizer is unavailable offline; this one tokenizes
    any text (one token per UTF-8 byte) with the real CLIPTokenizer class.
    """
    directory.mkdir(parents=True, exist_ok=True)
    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = [*symbols, *(s + "</w>" for s in symbols), BOS, EOS]
    vocab = {token: index for index, token in enumerate(tokens)}
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")


def tiny_tokenizer() -> CLIPTokenizer:
    with tempfile.TemporaryDirectory() as folder:
        write_byte_tokenizer_files(Path(folder))
        # transformers 5 defaults model_max_length to ~1e30, which overflows the pipeline.
        tokenizer: CLIPTokenizer = CLIPTokenizer.from_pretrained(
            folder, model_max_length=TOKENIZER_MAX_LENGTH
        )
        return tokenizer


def tiny_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    torch.manual_seed(SEED)
    config = CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=HIDDEN_SIZE,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=5,
        max_position_embeddings=TOKENIZER_MAX_LENGTH,
        vocab_size=len(tokenizer),
    )
    return CLIPTextModel(config)


def tiny_unet(in_channels: int = 4) -> UNet2DConditionModel:
    """SD 1.5 layout in miniature; `in_channels=9` gives an inpainting UNet."""
    torch.manual_seed(SEED)
    unet: UNet2DConditionModel = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=HIDDEN_SIZE,
    )
    return unet


def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(SEED)
    vae: AutoencoderKL = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
    )
    return vae


def tiny_scheduler() -> DDIMScheduler:
    # SD 1.5's own noise schedule, so every sampler's from_config sees real values.
    scheduler: DDIMScheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return scheduler


def tiny_sd15_components() -> dict[str, Any]:
    """Keyword arguments for `StableDiffusionPipeline`; swap a part to build a variant."""
    tokenizer = tiny_tokenizer()
    return {
        "vae": tiny_vae(),
        "text_encoder": tiny_text_encoder(tokenizer),
        "tokenizer": tokenizer,
        "unet": tiny_unet(),
        "scheduler": tiny_scheduler(),
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }


def write_tiny_sd15(directory: Path) -> Path:
    """Write a diffusers-format SD 1.5 pipeline folder (model_index.json, ...) to `directory`."""
    pipeline = StableDiffusionPipeline(**tiny_sd15_components())
    pipeline.save_pretrained(directory, safe_serialization=True)
    return directory


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m engine.tiny", description=__doc__)
    parser.add_argument("directory", type=Path, help="folder to write the pipeline into")
    args = parser.parse_args(argv)
    print(write_tiny_sd15(args.directory))


if __name__ == "__main__":
    main()
