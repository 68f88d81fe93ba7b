"""The `[engine]` speed options: each takes effect on the loaded modules, or is refused
with a message that says what to change, on the CPU and the tiny models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers.models.attention_processor import (
    AttnProcessor,
    AttnProcessor2_0,
    FusedAttnProcessor2_0,
)
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from PIL import Image, ImageChops

from engine.errors import BadRequest
from engine.models import ModelRegistry
from engine.pipelines import generate
from engine.protocol import EngineSpeed, JobResult, ModelSpec

from .conftest import make_request

CPU = torch.device("cpu")


def result_of(outcomes: list[Any]) -> str:
    """The path of the one image a one-job request made."""
    (outcome,) = outcomes
    assert isinstance(outcome, JobResult), outcome
    return outcome.images[0].path


def load(source: Path, **options: Any) -> ModelRegistry:
    return ModelRegistry(
        {"tiny": ModelSpec(source=str(source), width=64, height=64, steps=2, cfg=7.0)},
        CPU,
        speed_options=EngineSpeed(**options),
    )


def processors(module: Any) -> set[type]:
    return {type(processor) for processor in module.attn_processors.values()}


def first_conv(module: Any) -> torch.Tensor:
    conv: torch.Tensor = (
        module.conv_in if hasattr(module, "conv_in") else module.encoder.conv_in
    ).weight
    return conv


def no_progress(step: int, total: int, preview: str | None) -> None:
    pass


def test_the_default_is_float32_sdpa_channels_last_and_fused_qkv_on_cpu(
    tiny_model_dir: Path,
) -> None:
    pipeline = load(tiny_model_dir).get("tiny").pipeline
    assert pipeline.unet.dtype == pipeline.vae.dtype == torch.float32
    for module in (pipeline.unet, pipeline.vae):
        assert processors(module) == {FusedAttnProcessor2_0}
        assert first_conv(module).is_contiguous(memory_format=torch.channels_last)
    # Each attention computes q, k and v with one matmul (cross-attention: k and v).
    assert hasattr(pipeline.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1, "to_qkv")


def test_bf16_weights_on_the_cpu(tiny_model_dir: Path) -> None:
    model = load(tiny_model_dir, dtype="bf16").get("tiny")
    assert model.dtype == torch.bfloat16
    assert model.pipeline.unet.dtype == model.pipeline.vae.dtype == torch.bfloat16


def test_fp16_on_the_cpu_is_refused_before_anything_loads(tiny_model_dir: Path) -> None:
    with pytest.raises(BadRequest, match=r'dtype = "fp16" needs a GPU.*use "fp32"'):
        load(tiny_model_dir, dtype="fp16")


def test_classic_attention_without_fusion_or_channels_last(tiny_model_dir: Path) -> None:
    pipeline = (
        load(tiny_model_dir, attention="classic", fuse_qkv=False, channels_last=False)
        .get("tiny")
        .pipeline
    )
    for module in (pipeline.unet, pipeline.vae):
        assert processors(module) == {AttnProcessor}
        assert first_conv(module).is_contiguous()
        assert not first_conv(module).is_contiguous(memory_format=torch.channels_last)


def test_fused_projections_make_the_same_image_as_separate_ones(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    fused = load(tiny_model_dir)
    separate = load(tiny_model_dir, fuse_qkv=False, channels_last=False)
    assert processors(separate.get("tiny").pipeline.unet) == {AttnProcessor2_0}
    images = [
        result_of(generate(make_request(tmp_path / name, seed=3), registry, no_progress))
        for name, registry in (("fused", fused), ("separate", separate))
    ]
    with Image.open(images[0]) as first, Image.open(images[1]) as second:
        extrema = ImageChops.difference(first, second).getextrema()
    assert max(high for _, high in extrema) <= 2  # float rounding only


def other_vae(directory: Path) -> Path:
    """A tiny VAE with its own weights and no fp16 upcast, like sdxl-vae-fp16-fix."""
    torch.manual_seed(7)
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        force_upcast=False,
    )
    vae.save_pretrained(directory)
    return directory


def test_sdxl_models_get_the_configured_vae_and_sd_models_keep_theirs(
    tiny_model_set: dict[str, Path], tmp_path: Path
) -> None:
    vae = other_vae(tmp_path / "vae")
    registry = ModelRegistry(
        {
            "xl": ModelSpec(source=str(tiny_model_set["sdxl"])),
            "sd": ModelSpec(source=str(tiny_model_set["sd15"])),
        },
        CPU,
        memory_budget=1 << 30,
        speed_options=EngineSpeed(sdxl_vae=str(vae)),
    )
    xl = registry.get("xl").pipeline
    assert xl.vae.config.force_upcast is False
    expected = AutoencoderKL.from_pretrained(vae).decoder.conv_out.weight
    assert torch.equal(xl.vae.decoder.conv_out.weight, expected)
    assert registry.get("sd").pipeline.vae.config.force_upcast is True


def test_compile_without_a_compiler_is_refused_with_what_to_do(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    with pytest.raises(BadRequest, match=r"needs a C\+\+ compiler.*set compile = false"):
        load(tiny_model_dir, compile=True)


def test_compiled_modules_are_traced_at_warm_up_and_never_again_for_new_seeds_or_prompts(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    traced: list[str] = []

    def backend(graph: torch.fx.GraphModule, inputs: list[torch.Tensor]) -> Any:
        traced.append(graph.code)  # a cheap stand-in for inductor: runs the traced graph
        return graph.forward

    registry = ModelRegistry(
        {"tiny": ModelSpec(source=str(tiny_model_dir), width=64, height=64, steps=2)},
        CPU,
        speed_options=EngineSpeed(compile=True, warmup_model="tiny", warmup_batch_images=[1]),
        compile_backend=backend,
    )
    registry.warm_up()
    pipeline = registry.get("tiny").pipeline
    # The UNet for the default sampler's integer timesteps and for float ones, and
    # the VAE decoder; a shape seen twice would also count.
    assert len(traced) == 3
    jobs = ((1, "a red fox", "Euler a"), (2, "a lighthouse at dusk, in the rain", "DDIM"))
    for seed, prompt, sampler in jobs:
        request = make_request(
            tmp_path / str(seed), seed=seed, prompt=prompt, sampler=sampler, steps=2
        )
        generate(request, registry, no_progress)
    assert len(traced) == 3
    assert pipeline.unet._compiled_call_impl is not None
