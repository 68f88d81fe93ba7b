"""Style reference and blend through IP-Adapter, on the tiny models with a tiny IP-Adapter
and CLIP image encoder built from config (engine.tiny.write_tiny_ip_adapter)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
from PIL import Image

from engine.checkpoints import Family
from engine.errors import BadRequest
from engine.memory import GIB
from engine.models import ModelRegistry
from engine.pipelines import generate
from engine.protocol import JobResult, ModelSpec, ReferenceMode, batch_key
from engine.tiny import write_tiny_ip_adapter

from .conftest import make_request, only_result
from .test_pipelines import no_progress, pixels


def adapter_fields(folder: Path) -> dict[str, str]:
    return {
        "ip_adapter": str(folder / "ip-adapter.safetensors"),
        "image_encoder": str(folder / "image_encoder"),
    }


@pytest.fixture(scope="module")
def registry(
    tiny_model_set: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> ModelRegistry:
    """ "tiny" and "xl" with their family's IP-Adapter, "plain" without one."""
    root = tmp_path_factory.mktemp("ip-adapters")
    sd, xl = write_tiny_ip_adapter(root / "sd"), write_tiny_ip_adapter(root / "xl", Family.SDXL)
    specs = {
        "tiny": ModelSpec(source=str(tiny_model_set["sd15"]), **adapter_fields(sd)),
        "plain": ModelSpec(source=str(tiny_model_set["sd15"])),
        "xl": ModelSpec(source=str(tiny_model_set["sdxl"]), **adapter_fields(xl)),
    }
    return ModelRegistry(specs, torch.device("cpu"), GIB)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Three reference images: a gradient, stripes and a checkerboard."""
    folder = tmp_path_factory.mktemp("references")
    drawings = [
        lambda x, y: (4 * x, 4 * y, 128),
        lambda x, y: (255 * (x // 8 % 2), 40, 200),
        lambda x, y: (255 * ((x // 8 + y // 8) % 2),) * 3,
    ]
    paths = []
    for number, colour in enumerate(drawings):
        image = Image.new("RGB", (64, 64))
        image.putdata([colour(x, y) for y in range(64) for x in range(64)])
        path = folder / f"reference-{number}.png"
        image.save(path)
        paths.append(str(path))
    return paths


def unet_weights(registry: ModelRegistry) -> dict[str, torch.Tensor]:
    unet = registry.get("tiny").pipeline.unet
    return {name: tensor.detach().clone() for name, tensor in unet.state_dict().items()}


def make(registry: ModelRegistry, output_dir: Path, **changes: Any) -> JobResult:
    return only_result(generate(make_request(output_dir, **changes), registry, no_progress))


def first(result: JobResult) -> bytes:
    return pixels(result.images[0].path)


def test_a_style_reference_steers_the_image_and_is_gone_after(
    registry: ModelRegistry, pictures: list[str], tmp_path: Path
) -> None:
    plain = first(make(registry, tmp_path / "plain"))
    before = unet_weights(registry)
    processors = {n: type(p) for n, p in registry.get("tiny").pipeline.unet.attn_processors.items()}
    styled = first(make(registry, tmp_path / "styled", references=(pictures[0],)))
    assert styled != plain
    # Another reference, another image; the same one, the same image.
    assert first(make(registry, tmp_path / "other", references=(pictures[1],))) != styled
    assert first(make(registry, tmp_path / "again", references=(pictures[0],))) == styled
    # After: the UNet's weights and attention processors are the checkpoint's again.
    after_weights = unet_weights(registry)
    assert after_weights.keys() == before.keys()  # no adapter layer left behind
    assert all(torch.equal(before[name], after_weights[name]) for name in before)
    after = registry.get("tiny").pipeline.unet
    assert {n: type(p) for n, p in after.attn_processors.items()} == processors
    assert after.encoder_hid_proj is None
    assert first(make(registry, tmp_path / "plain-again")) == plain


def test_a_style_reference_at_weight_zero_leaves_the_image_as_without(
    registry: ModelRegistry, pictures: list[str], tmp_path: Path
) -> None:
    # The adapter is loaded and its image encoded, but every block's scale is 0.
    plain = first(make(registry, tmp_path / "plain"))
    zero = make(registry, tmp_path / "zero", references=(pictures[0],), reference_scale=0.0)
    assert first(zero) == plain


def scales_while_running(
    registry: ModelRegistry, model: str, tmp_path: Path, **changes: Any
) -> dict[str, float]:
    """Each IP-Adapter attention's scale as the batch's first step ends."""
    seen: dict[str, float] = {}

    def watching(step: int, total: int, previews: object) -> None:
        for name, processor in registry.get(model).pipeline.unet.attn_processors.items():
            if isinstance(processor, IPAdapterAttnProcessor2_0) and step == 1:
                (seen[name],) = processor.scale
        assert seen

    generate(make_request(tmp_path, model=model, **changes), registry, watching)
    return seen


def test_a_style_reference_steers_only_the_style_block_a_blend_every_block(
    registry: ModelRegistry, pictures: list[str], tmp_path: Path
) -> None:
    style = scales_while_running(
        registry, "tiny", tmp_path / "s", references=(pictures[0],), reference_scale=0.8
    )
    # The tiny SD UNet's first up block is its cross-attention up block: all of it.
    assert {name for name, scale in style.items() if scale} == {
        name for name in style if name.startswith("up_blocks.0.")
    }
    assert set(style.values()) == {0.0, 0.8}
    blend = scales_while_running(
        registry,
        "tiny",
        tmp_path / "b",
        references=tuple(pictures[:2]),
        reference_mode=ReferenceMode.BLEND,
        reference_scale=0.8,
    )
    assert blend.keys() == style.keys() and set(blend.values()) == {0.8}


def test_sdxl_style_is_the_middle_attention_of_its_first_up_block(
    registry: ModelRegistry, pictures: list[str], tmp_path: Path
) -> None:
    style = scales_while_running(registry, "xl", tmp_path, references=(pictures[0],))
    steered = {name.split(".transformer_blocks")[0] for name, scale in style.items() if scale}
    assert steered == {"up_blocks.0.attentions.1"}


def test_a_blend_of_images_differs_from_each_image_alone(
    registry: ModelRegistry, pictures: list[str], tmp_path: Path
) -> None:
    def blended(*images: str) -> bytes:
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        mode = ReferenceMode.BLEND
        return first(make(registry, folder, references=images, reference_mode=mode))

    both = blended(pictures[0], pictures[2])
    assert both not in {blended(pictures[0]), blended(pictures[2])}
    assert blended(pictures[0], pictures[2]) == both


def test_references_on_a_model_without_an_ip_adapter_are_refused(
    registry: ModelRegistry, pictures: list[str], tmp_path: Path
) -> None:
    with pytest.raises(BadRequest, match=r"set ip_adapter and image_encoder in \[models.plain\]"):
        generate(
            make_request(tmp_path, model="plain", references=(pictures[0],)),
            registry,
            no_progress,
        )


def test_jobs_batch_together_only_after_the_same_references(pictures: list[str]) -> None:
    plain = make_request(Path("/out"))
    assert batch_key(plain) == batch_key(make_request(Path("/out"), reference_scale=1.5))
    one = make_request(Path("/out"), references=(pictures[0],))
    assert batch_key(one) != batch_key(plain)
    assert batch_key(one) != batch_key(make_request(Path("/out"), references=(pictures[1],)))
