"""Live previews: a small PNG every k steps, decoded cheaply, never changing the final image."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from PIL import Image

from engine.checkpoints import Family
from engine.models import ModelRegistry
from engine.pipelines import generate
from engine.previews import latents_to_rgb

from .conftest import make_request, only_result
from .test_pipelines import pixels


def run_with_previews(
    registry: ModelRegistry, output_dir: Path, model: str, every: int
) -> tuple[str, list[tuple[int, str | None]], list[tuple[int, int]]]:
    """The final image's path, (step, preview) per step, and each preview's size when sent."""
    steps: list[tuple[int, str | None]] = []
    sizes: list[tuple[int, int]] = []

    def on_step(step: int, total: int, previews: Mapping[str, str | None]) -> None:
        assert list(previews) == ["job1"]
        preview = previews["job1"]
        steps.append((step, preview))
        if preview is not None:
            with Image.open(preview) as image:
                sizes.append(image.size)

    request = make_request(output_dir, model=model, steps=4, preview_every=every)
    result = only_result(generate(request, registry, on_step))
    return result.images[0].path, steps, sizes


@pytest.mark.parametrize(
    ("model", "size"),
    [
        ("plain", (32, 32)),  # linear latent-to-RGB: one pixel per latent
        ("tiny", (64, 64)),  # the tiny autoencoder decodes to full size
        ("xl", (32, 32)),
    ],
)
def test_a_preview_every_k_steps_and_the_same_final_pixels_as_without(
    model: str, size: tuple[int, int], studio: ModelRegistry, tmp_path: Path
) -> None:
    final, steps, sizes = run_with_previews(studio, tmp_path / "with", model, every=2)
    preview = str(tmp_path / "with" / "job1-preview.png")
    assert steps == [(1, None), (2, preview), (3, None), (4, preview)]
    assert sizes == [size, size]
    assert not Path(preview).exists()  # removed once the job is done
    plain, no_previews, _ = run_with_previews(studio, tmp_path / "without", model, every=0)
    assert [p for _, p in no_previews] == [None] * 4
    assert pixels(final) == pixels(plain)


def test_linear_previews_map_each_family_to_its_own_colours() -> None:
    latents = torch.ones(4, 2, 3)
    sd = latents_to_rgb(latents, Family.SD)
    xl = latents_to_rgb(latents, Family.SDXL)
    assert sd.shape == xl.shape == (3, 2, 3)
    assert not torch.allclose(sd, xl)
