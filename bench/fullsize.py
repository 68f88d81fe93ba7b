"""Full-size SD 1.5 and SDXL architectures from their published configs, with random weights.

The configs below are the published ones (the `config.json` of each component
of stable-diffusion-v1-5/stable-diffusion-v1-5 and of
stabilityai/stable-diffusion-xl-base-1.0, and madebyollin/taesd for previews),
written here as data, so the benchmark computes exactly what the real
checkpoints compute without downloading them. The images are noise; the time,
memory and FLOPs are the real models'. The text encoders use the byte-level
tokenizer of engine.tiny (same sequence length, 77 tokens).

`TINY` holds the same structure at toy sizes, so `--smoke` runs every code path
of the GPU item on a CPU in seconds.
"""

# diffusers and transformers leave many public functions unannotated.
# mypy: untyped-calls-exclude="diffusers,transformers"

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.autoencoders.autoencoder_tiny import AutoencoderTiny
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
    StableDiffusionPipeline,
)
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import (
    StableDiffusionXLPipeline,
)
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from engine.tiny import tiny_tokenizer

Config = dict[str, Any]

SD15_UNET: Config = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ],
}

SD15_VAE: Config = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

# openai/clip-vit-large-patch14's text tower: SD 1.5's encoder and SDXL's first.
CLIP_L: Config = {
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "projection_dim": 768,
    "vocab_size": 49408,
}

SDXL_UNET: Config = {
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 2048,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816,
    "sample_size": 128,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "use_linear_projection": True,
}

SDXL_VAE: Config = SD15_VAE | {"sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}

# OpenCLIP ViT-bigG/14's text tower: SDXL's second encoder.
CLIP_BIGG: Config = {
    "hidden_act": "gelu",
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "projection_dim": 1280,
    "vocab_size": 49408,
}

# Both checkpoints' noise schedule; their default samplers differ (PNDM, Euler), so
# both are run with Euler here, the engine's jobs and plain diffusers alike.
SCHEDULER: Config = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "use_karras_sigmas": False,
}

# madebyollin/taesd (and taesdxl, the same architecture): AutoencoderTiny's defaults.
TAESD: Config = {}

_TINY_TEXT: Config = {
    "hidden_act": "quick_gelu",
    "hidden_size": 32,
    "intermediate_size": 37,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "num_attention_heads": 4,
    "num_hidden_layers": 5,
    "projection_dim": 32,
    "vocab_size": 514,
}
# Cross-attention at the lower resolution only, one layer per block (as engine.tiny):
# the smoke run exercises the code, and attention over every 32x32 position is slow.
_TINY_UNET: Config = {
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "sample_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "cross_attention_dim": 32,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
}
_TINY_VAE: Config = {
    "block_out_channels": [32, 64],
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2,
}
_TINY_TAESD: Config = {
    "encoder_block_out_channels": [16, 16],
    "decoder_block_out_channels": [16, 16],
    "num_encoder_blocks": [1, 1],
    "num_decoder_blocks": [1, 1],
    "latent_channels": 4,
}


@dataclass(frozen=True)
class Architecture:
    name: str
    title: str
    xl: bool
    unet: Config
    vae: Config
    text_encoders: tuple[Config, ...]
    taesd: Config
    width: int
    height: int
    steps: int
    cfg: float = 7.0
    # The targets, for the table; None: no target.
    min_it_per_s_speedup: float | None = None
    min_images_per_s: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def latent_side(self) -> tuple[int, int]:
        factor = 2 ** (len(self.vae["block_out_channels"]) - 1)
        return self.height // factor, self.width // factor


FULL = {
    "sd15": Architecture(
        "sd15",
        "SD 1.5 512x512, 25 steps",
        False,
        SD15_UNET,
        SD15_VAE,
        (CLIP_L,),
        TAESD,
        512,
        512,
        25,
        min_it_per_s_speedup=1.3,
        min_images_per_s=8.0,
    ),
    "sdxl": Architecture(
        "sdxl",
        "SDXL 1024x1024, 30 steps",
        True,
        SDXL_UNET,
        SDXL_VAE,
        (CLIP_L, CLIP_BIGG),
        TAESD,
        1024,
        1024,
        30,
        min_images_per_s=0.9,
    ),
}

TINY = {
    "sd15": Architecture(
        "sd15",
        "tiny SD 1.5-shaped 64x64, 5 steps",
        False,
        _TINY_UNET,
        _TINY_VAE,
        (_TINY_TEXT,),
        _TINY_TAESD,
        64,
        64,
        5,
    ),
    "sdxl": Architecture(
        "sdxl",
        "tiny SDXL-shaped 64x64, 5 steps",
        True,
        _TINY_UNET
        | {
            "attention_head_dim": [2, 4],
            "use_linear_projection": True,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 8,
            "transformer_layers_per_block": [1, 2],
            "projection_class_embeddings_input_dim": 6 * 8 + 32,
            "cross_attention_dim": 64,
        },
        _TINY_VAE | {"force_upcast": True},
        (_TINY_TEXT, _TINY_TEXT),
        _TINY_TAESD,
        64,
        64,
        5,
    ),
}


def _unet_inputs(arch: Architecture, batch: int) -> tuple[list[torch.Tensor], dict[str, Any]]:
    height, width = arch.latent_side
    context = arch.unet["cross_attention_dim"]
    args = [torch.randn(batch, 4, height, width), torch.tensor(999)]
    kwargs: dict[str, Any] = {"encoder_hidden_states": torch.randn(batch, 77, context)}
    if arch.xl:
        time_ids = 6 * arch.unet["addition_time_embed_dim"]
        pooled = arch.unet["projection_class_embeddings_input_dim"] - time_ids
        kwargs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(batch, pooled),
            "time_ids": torch.randn(batch, 6),
        }
    return args, kwargs


def unet_flops_per_step(arch: Architecture, images: int = 1) -> int:
    """FLOPs of one denoising step of `images` images with classifier-free guidance (a
    UNet batch of 2 x images), counted by FlopCounterMode on the meta device (shapes
    only: fast, no memory)."""
    with torch.device("meta"):
        unet = UNet2DConditionModel(**arch.unet)
        args, kwargs = _unet_inputs(arch, 2 * images)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            unet(*args, **kwargs)
    return int(counter.get_total_flops())


def _text_encoder(config: Config, tokenizer: Any, projection: bool) -> torch.nn.Module:
    text_config = CLIPTextConfig(
        **config,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return cast(torch.nn.Module, cls(text_config))


def build_pipeline(arch: Architecture, device: torch.device, dtype: torch.dtype) -> Any:
    """The architecture's text-to-image pipeline, random weights, on `device` in `dtype`,
    with diffusers' defaults otherwise (what plain diffusers runs)."""
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**arch.unet)
        vae = AutoencoderKL(**arch.vae)
        encoders = [
            _text_encoder(config, tokenizer, projection=index == 1)
            for index, config in enumerate(arch.text_encoders)
        ]
    scheduler = EulerDiscreteScheduler(**SCHEDULER)
    # Typed as Any: diffusers annotates these parameters narrower than what it accepts.
    parts: dict[str, Any] = {
        "vae": vae,
        "text_encoder": encoders[0],
        "tokenizer": tokenizer,
        "unet": unet,
        "scheduler": scheduler,
    }
    cls: Any
    if arch.xl:
        cls = StableDiffusionXLPipeline
        parts |= {"text_encoder_2": encoders[1], "tokenizer_2": tokenizer, "add_watermarker": False}
    else:
        cls = StableDiffusionPipeline
        parts |= {"safety_checker": None, "feature_extractor": None}
        parts["requires_safety_checker"] = False
    pipeline: Any = cls(**parts)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device=device, dtype=dtype)


def write_model(pipeline: Any, folder: Path) -> Path:
    """Save the pipeline as a diffusers folder the engine loads like any checkpoint."""
    pipeline.save_pretrained(folder, safe_serialization=True)
    return folder


def write_fp16_safe_vae(arch: Architecture, folder: Path) -> Path:
    """A VAE of the same architecture that needs no fp32 upcast, as
    madebyollin/sdxl-vae-fp16-fix is for SDXL (its weights are random here too)."""
    torch.manual_seed(1)
    AutoencoderKL(**(arch.vae | {"force_upcast": False})).save_pretrained(folder)
    return folder


def write_taesd(arch: Architecture, folder: Path) -> Path:
    torch.manual_seed(2)
    AutoencoderTiny(**arch.taesd).save_pretrained(folder)
    return folder
