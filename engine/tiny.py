"""Tiny random-weight Stable Diffusion pipelines for tests, built offline from config.

The components follow diffusers' own test fixtures (a fixed seed, a few
channels, a 5-layer text encoder), so a whole pipeline is about 8 MB, loads
in a fraction of a second and makes a 64x64 image on CPU in well under a
second. They are saved with `save_pretrained` and loaded back through the
same `from_pretrained` path real models use.

    python -m engine.tiny DIR          an SD 1.5 pipeline folder in DIR
    python -m engine.tiny --all DIR    the whole set, one folder each:
        DIR/sd15                 SD 1.5 pipeline (StableDiffusionPipeline)
        DIR/sdxl                 SDXL pipeline (two text encoders, "text_time" UNet)
        DIR/controlnet-scribble  ControlNet matching sd15's UNet (any control type)
        DIR/inpaint              SD 1.5 inpainting pipeline (9-channel UNet)
        DIR/taesd                tiny autoencoder (AutoencoderTiny) for previews
        DIR/ip-adapter           IP-Adapter and CLIP image encoder for SD 1.5 (--sref, /blend)

`write_tiny_lora` writes a LoRA for the tiny SD 1.5 or SDXL UNet (tests of LoRAs and
draft mode); `write_tiny_ip_adapter` an IP-Adapter and its CLIP image encoder for
either (tests of --sref and /blend).
"""

# diffusers leaves many public functions unannotated; their results are typed here.
# mypy: untyped-calls-exclude=diffusers

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any, cast

import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.autoencoders.autoencoder_tiny import AutoencoderTiny
from diffusers.models.controlnets.controlnet import ControlNetModel
from diffusers.models.embeddings import ImageProjection
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
    StableDiffusionPipeline,
)
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_inpaint import (
    StableDiffusionInpaintPipeline,
)
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import (
    StableDiffusionXLPipeline,
)
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from diffusers.utils.state_dict_utils import convert_state_dict_to_diffusers
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file
from tokenizers import pre_tokenizers
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from engine.protocol import Family

SEED = 0
TOKENIZER_MAX_LENGTH = 77
HIDDEN_SIZE = 32
SDXL_TIME_EMBED_DIM = 8
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


def _text_config(tokenizer: CLIPTokenizer) -> CLIPTextConfig:
    return CLIPTextConfig(
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
        projection_dim=HIDDEN_SIZE,
    )


def tiny_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    torch.manual_seed(SEED)
    return CLIPTextModel(_text_config(tokenizer))


def tiny_text_encoder_with_projection(tokenizer: CLIPTokenizer) -> CLIPTextModelWithProjection:
    """SDXL's second text encoder: its pooled, projected output feeds the UNet's added embedding."""
    torch.manual_seed(SEED + 1)
    return CLIPTextModelWithProjection(_text_config(tokenizer))


def tiny_unet(in_channels: int = 4) -> UNet2DConditionModel:
    """SD 1.5 layout in miniature; `in_channels=9` gives an inpainting UNet.

    Cross-attention only at the lower resolution and one layer per block: attention
    over all 32x32 latent positions made each step 3x slower, and the tests run
    thousands of steps."""
    torch.manual_seed(SEED)
    unet: UNet2DConditionModel = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=HIDDEN_SIZE,
    )
    return unet


def tiny_sdxl_unet() -> UNet2DConditionModel:
    """SDXL layout in miniature: both encoders' hidden states, plus size/crop time ids."""
    torch.manual_seed(SEED)
    unet: UNet2DConditionModel = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=SDXL_TIME_EMBED_DIM,
        transformer_layers_per_block=(1, 2),
        # Six time ids (original size, crop, target size) plus the pooled text embedding.
        projection_class_embeddings_input_dim=6 * SDXL_TIME_EMBED_DIM + HIDDEN_SIZE,
        cross_attention_dim=2 * HIDDEN_SIZE,
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
        # Tiled decode cuts latents into sample_size / 2 tiles: 32, so a 128 px upscale tiles.
        sample_size=64,
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


def write_tiny_sdxl(directory: Path) -> Path:
    """Write a diffusers-format SDXL pipeline folder to `directory`."""
    tokenizer = tiny_tokenizer()
    pipeline = StableDiffusionXLPipeline(
        vae=tiny_vae(),
        text_encoder=tiny_text_encoder(tokenizer),
        text_encoder_2=tiny_text_encoder_with_projection(tokenizer),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=tiny_sdxl_unet(),
        # diffusers annotates this parameter with its enum of scheduler names.
        scheduler=cast(Any, tiny_scheduler()),
    )
    pipeline.save_pretrained(directory, safe_serialization=True)
    return directory


def write_tiny_inpaint(directory: Path) -> Path:
    """Write an SD 1.5 inpainting pipeline folder: the UNet also reads mask and masked image."""
    components = tiny_sd15_components() | {"unet": tiny_unet(in_channels=9)}
    StableDiffusionInpaintPipeline(**components).save_pretrained(directory, safe_serialization=True)
    return directory


def write_tiny_controlnet(directory: Path) -> Path:
    """Write a ControlNet made from the tiny SD 1.5 UNet, so it fits that model."""
    torch.manual_seed(SEED)
    # One downsampling conditioning block: the control image meets the latents at
    # the tiny VAE's scale (1/2), not SD's (1/8).
    controlnet = ControlNetModel.from_unet(
        tiny_unet(), conditioning_embedding_out_channels=(16, 32)
    )
    # A new ControlNet's "zero convolutions" start at zero, so it would change
    # nothing; random ones let tests see that the control image steers the result.
    zero_convs = [
        *controlnet.controlnet_down_blocks,
        controlnet.controlnet_mid_block,
        controlnet.controlnet_cond_embedding.conv_out,
    ]
    with torch.no_grad():
        for conv in zero_convs:
            torch.nn.init.normal_(conv.weight, std=0.1)
    controlnet.save_pretrained(directory, safe_serialization=True)
    return directory


def write_tiny_preview_decoder(directory: Path) -> Path:
    """Write a tiny autoencoder whose decoder upsamples latents as much as the tiny VAE does."""
    torch.manual_seed(SEED)
    decoder = AutoencoderTiny(
        encoder_block_out_channels=(16, 16),
        decoder_block_out_channels=(16, 16),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
        latent_channels=4,
    )
    decoder.save_pretrained(directory, safe_serialization=True)
    return directory


def write_tiny_lora(directory: Path, family: Family = Family.SD, seed: int = SEED) -> Path:
    """Write a LoRA (rank 4) on the attention projections of the tiny `family` UNet, as
    diffusers' `save_lora_weights` writes one (pytorch_lora_weights.safetensors).

    A new LoRA's B matrices start at zero, so it would change nothing; random ones
    (from `seed`) let tests see it steer the image, and tell two LoRAs apart.
    """
    unet = tiny_sdxl_unet() if family is Family.SDXL else tiny_unet()
    torch.manual_seed(seed)
    unet.add_adapter(
        LoraConfig(
            r=4,
            lora_alpha=4,
            target_modules=["to_q", "to_k", "to_v", "to_out.0"],
            init_lora_weights=False,
        )
    )
    layers: dict[str, torch.nn.Module | torch.Tensor] = convert_state_dict_to_diffusers(
        get_peft_model_state_dict(unet)
    )
    pipeline = StableDiffusionXLPipeline if family is Family.SDXL else StableDiffusionPipeline
    pipeline.save_lora_weights(directory, unet_lora_layers=layers, safe_serialization=True)
    return directory


def write_tiny_ip_adapter(directory: Path, family: Family = Family.SD, seed: int = SEED) -> Path:
    """Write DIR/ip-adapter.safetensors for the tiny `family` UNet, in the layout
    diffusers' `load_ip_adapter` reads (the original IP-Adapter's: `image_proj.*`, the
    projection from the image embedding to 4 tokens, and `ip_adapter.<n>.to_k_ip` /
    `to_v_ip` for each cross-attention, n = 1, 3, 5, ... in the UNet's order), and
    DIR/image_encoder, the CLIPVisionModelWithProjection whose embeddings it reads."""
    unet = tiny_sdxl_unet() if family is Family.SDXL else tiny_unet()
    torch.manual_seed(seed)
    encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=HIDDEN_SIZE,
            intermediate_size=37,
            projection_dim=HIDDEN_SIZE,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        )
    )
    encoder.save_pretrained(directory / "image_encoder", safe_serialization=True)
    cross = int(unet.config["cross_attention_dim"])
    projection = ImageProjection(
        cross_attention_dim=cross, image_embed_dim=HIDDEN_SIZE, num_image_text_embeds=4
    )
    tensors = {
        f"image_proj.{name.replace('image_embeds', 'proj')}": value
        for name, value in projection.state_dict().items()
    }
    crossing = [name for name in unet.attn_processors if name.endswith("attn2.processor")]
    for number, name in enumerate(crossing):
        to_k = unet.get_submodule(name.replace("processor", "to_k"))
        assert isinstance(to_k, torch.nn.Linear)
        hidden = to_k.out_features
        for key in ("to_k_ip", "to_v_ip"):
            weight = torch.nn.Linear(cross, hidden, bias=False).weight.detach()
            tensors[f"ip_adapter.{2 * number + 1}.{key}.weight"] = weight
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, directory / "ip-adapter.safetensors")
    return directory


# The folders `--all` writes, by name under DIR.
TINY_SET = {
    "sd15": write_tiny_sd15,
    "sdxl": write_tiny_sdxl,
    "controlnet-scribble": write_tiny_controlnet,
    "inpaint": write_tiny_inpaint,
    "taesd": write_tiny_preview_decoder,
    "ip-adapter": write_tiny_ip_adapter,  # for sd15
    "lora": write_tiny_lora,  # for sd15
}


def write_tiny_set(directory: Path) -> dict[str, Path]:
    return {name: write(directory / name) for name, write in TINY_SET.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m engine.tiny",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("directory", type=Path, help="folder to write into")
    parser.add_argument(
        "--all", action="store_true", help="write the whole tiny set, one subfolder each"
    )
    args = parser.parse_args(argv)
    if args.all:
        for path in write_tiny_set(args.directory).values():
            print(path)
    else:
        print(write_tiny_sd15(args.directory))


if __name__ == "__main__":
    main()
