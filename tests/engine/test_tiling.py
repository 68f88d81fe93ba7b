"""--tile on the tiny models: seamless images, and the shared models left as they were."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from PIL import Image

from engine.errors import Cancelled
from engine.models import ModelRegistry
from engine.pipelines import generate
from engine.protocol import ControlType, JobResult, Mode
from engine.tiling import convolutions, seamless

from .conftest import make_request, only_result
from .test_modes import run
from .test_pipelines import no_progress, pixels


def padding_modes(registry: ModelRegistry, model: str = "tiny") -> set[str]:
    return {conv.padding_mode for conv in convolutions(registry.get(model).pipeline)}


def render(pipeline: DiffusionPipeline, latents: torch.Tensor) -> np.ndarray[Any, Any]:
    """The pipeline's image from these starting latents, as floats 0-1 (height, width, rgb);
    a sampler that adds no noise of its own, so the latents are all that varies."""
    pipeline.scheduler = EulerDiscreteScheduler.from_config(pipeline.scheduler.config)
    call = cast(Callable[..., Any], pipeline)
    size = latents.shape[-1] * pipeline.vae_scale_factor
    output = call(
        prompt="old mossy cobblestones",
        latents=latents,
        width=size,
        height=size,
        num_inference_steps=3,
        output_type="np",
    )
    image: np.ndarray[Any, Any] = output.images[0]
    return image


# Starting noise moved round by (down, across) latent pixels: even steps, which the tiny
# UNet's downsampling (it halves the latent once) keeps on its grid.
DOWN, ACROSS = 4, 10


def image_and_moved(
    registry: ModelRegistry, tile: bool
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """An image, the image made from the same noise moved round by (DOWN, ACROSS), and
    the first image moved round by as many pixels."""
    pipeline = registry.get("tiny").pipeline
    latents = torch.randn((1, 4, 32, 32), generator=torch.Generator().manual_seed(7))
    with seamless(pipeline, tile):
        image = render(pipeline, latents)
        moved = render(pipeline, torch.roll(latents, (DOWN, ACROSS), dims=(2, 3)))
    scale = pipeline.vae_scale_factor
    return image, moved, np.roll(image, (DOWN * scale, ACROSS * scale), axis=(0, 1))


def test_a_tiled_image_continues_across_its_left_and_right_and_top_and_bottom_edges(
    registry: ModelRegistry,
) -> None:
    """On random weights the image is close to noise: its seam cannot be told from its
    inner columns by statistics (untiled, the zero padding even pulls both edges to alike
    colours). What is checked exactly instead: from the same noise moved round, the tiled
    image is the first one moved round, so the first image's seam (last column against
    first) is an inner pair of neighbouring columns of the moved one, and so are its top
    and bottom rows."""
    image, moved, expected = image_and_moved(registry, tile=True)
    np.testing.assert_allclose(moved, expected, atol=1e-4)
    top, left = (step * registry.get("tiny").pipeline.vae_scale_factor for step in (DOWN, ACROSS))
    # Row i of the first image is row i + top of the moved one, column j its column j + left.
    height, width = image.shape[:2]
    rows, columns = np.r_[top:height, 0:top], np.r_[left:width, 0:left]
    seam = np.abs(image[:, -1] - image[:, 0])
    inner = np.abs(moved[:, left] - moved[:, left - 1])[rows]
    np.testing.assert_allclose(seam, inner, atol=1e-4)
    seam = np.abs(image[-1] - image[0])
    inner = np.abs(moved[top] - moved[top - 1])[columns]
    np.testing.assert_allclose(seam, inner, atol=1e-4)
    assert padding_modes(registry) == {"zeros"}


def test_an_untiled_image_has_edges_the_moved_noise_does_not_reproduce(
    registry: ModelRegistry,
) -> None:
    _, moved, expected = image_and_moved(registry, tile=False)
    assert np.abs(moved - expected).max() > 0.1


def test_the_padding_is_circular_while_a_tiled_job_runs_and_put_back_after(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    during: list[set[str]] = []

    def watching(step: int, total: int, previews: Mapping[str, str | None]) -> None:
        during.append(padding_modes(registry))

    before = run_plain(registry, tmp_path / "before")
    assert padding_modes(registry) == {"zeros"}
    generate(make_request(tmp_path / "tiled", tile=True, seed=3), registry, watching)
    assert during and all(modes == {"circular"} for modes in during)
    assert padding_modes(registry) == {"zeros"}
    # The next job on the shared pipeline is the one it would have been.
    after = run_plain(registry, tmp_path / "after")
    assert pixels(after.images[0].path) == pixels(before.images[0].path)


def run_plain(registry: ModelRegistry, output_dir: Path) -> JobResult:
    return only_result(generate(make_request(output_dir, seed=3), registry, no_progress))


class _Broken(Exception):
    pass


@pytest.mark.parametrize("ending", [Cancelled("cancelled at step 2"), _Broken("step 2")])
def test_a_tiled_batch_that_is_cancelled_or_fails_still_puts_the_padding_back(
    ending: Exception, registry: ModelRegistry, tmp_path: Path
) -> None:
    def stop_at_two(step: int, total: int, previews: Mapping[str, str | None]) -> None:
        if step == 2:
            assert padding_modes(registry) == {"circular"}
            raise ending

    with pytest.raises(type(ending)):
        generate(make_request(tmp_path, tile=True), registry, stop_at_two)
    assert padding_modes(registry) == {"zeros"}


def test_every_model_of_a_controlnet_job_wraps_around(
    studio: ModelRegistry, images: dict[str, Path], tmp_path: Path
) -> None:
    pipeline = studio.get("tiny").pipeline_for(Mode.CONTROLNET, ControlType.SCRIBBLE)
    padded = set(convolutions(pipeline))
    for name in ("unet", "vae", "controlnet"):
        assert padded & set(getattr(pipeline, name).modules()), name
    seen: list[set[str]] = []

    def watching(step: int, total: int, previews: Mapping[str, str | None]) -> None:
        seen.append({conv.padding_mode for conv in convolutions(pipeline)})

    request = make_request(
        tmp_path,
        mode=Mode.CONTROLNET,
        control_image=str(images["scribble"]),
        control_type="scribble",
        tile=True,
    )
    only_result(generate(request, studio, watching))
    assert seen and all(modes == {"circular"} for modes in seen)
    assert {conv.padding_mode for conv in convolutions(pipeline)} == {"zeros"}


def test_a_tiled_upscale_decodes_whole_so_the_decode_wraps_around_the_image(
    studio: ModelRegistry, images: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vae = studio.get("tiny").pipeline.vae
    tiled: list[bool] = []
    real_decode = vae.decode

    def watching_decode(*args: Any, **kwargs: Any) -> Any:
        tiled.append(vae.use_tiling)
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(vae, "decode", watching_decode)
    run(studio, tmp_path, Mode.UPSCALE, images, model="tiny", tile=True)
    assert tiled == [False]


def test_a_tiled_image_says_so_in_its_recipe_and_parameters(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    tiled = only_result(generate(make_request(tmp_path / "t", tile=True), registry, no_progress))
    plain = only_result(generate(make_request(tmp_path / "p"), registry, no_progress))
    with Image.open(tiled.images[0].path) as image:
        recipe, parameters = json.loads(image.text["atelier"]), image.text["parameters"]
    assert recipe["tile"] is True and parameters.endswith(", Tiling: True")
    # An untiled image's recipe and parameters are as they were before --tile.
    assert "tile" not in plain.images[0].recipe
    with Image.open(plain.images[0].path) as image:
        assert "Tiling" not in image.text["parameters"]


def test_an_sdxl_job_wraps_around_too(studio: ModelRegistry, tmp_path: Path) -> None:
    seen: list[set[str]] = []

    def watching(step: int, total: int, previews: Mapping[str, str | None]) -> None:
        seen.append(padding_modes(studio, "xl"))

    only_result(generate(make_request(tmp_path, model="xl", tile=True), studio, watching))
    assert seen and all(modes == {"circular"} for modes in seen)
    assert padding_modes(studio, "xl") == {"zeros"}
