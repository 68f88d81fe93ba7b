"""Every generation mode on the tiny models: sizes, seeds, inputs that matter, recipes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from engine.errors import BadRequest
from engine.inputs import file_sha256, init_image, outpaint_canvas, seam_blur
from engine.models import ModelRegistry
from engine.pipelines import generate
from engine.protocol import ControlType, Frame, JobResult, Mode

from .conftest import make_request, only_result
from .test_pipelines import largest_difference, no_progress, pixels

# The 96x80 photo at half a 64x64 canvas's sides, in its middle (a 2x zoom out).
ZOOMED_OUT = Frame(left=16, top=16, width=32, height=32)


def mode_inputs(mode: Mode, images: dict[str, Path]) -> dict[str, Any]:
    """The input fields `mode` needs, from the session's input files."""
    photo = str(images["photo"])
    return {
        Mode.TXT2IMG: {},
        Mode.IMG2IMG: {"init_image": photo},
        Mode.VARIATION: {"init_image": photo, "strength": 0.5},
        Mode.INPAINT: {"init_image": photo, "mask_image": str(images["mask"])},
        Mode.CONTROLNET: {"control_image": str(images["scribble"]), "control_type": "scribble"},
        Mode.UPSCALE: {"init_image": photo, "width": 128, "height": 128, "strength": 0.5},
        Mode.OUTPAINT: {"init_image": photo, "frame": ZOOMED_OUT.model_dump(), "strength": 0.9},
    }[mode]


def run(
    registry: ModelRegistry, output_dir: Path, mode: Mode, images: dict[str, Path], **changes: Any
) -> JobResult:
    request = make_request(output_dir, mode=mode, **(mode_inputs(mode, images) | changes))
    return only_result(generate(request, registry, no_progress))


@pytest.mark.parametrize("model", ["tiny", "xl"])
@pytest.mark.parametrize("mode", [m for m in Mode if m is not Mode.CONTROLNET])
def test_every_mode_makes_images_of_the_requested_size_on_both_families(
    model: str, mode: Mode, studio: ModelRegistry, images: dict[str, Path], tmp_path: Path
) -> None:
    result = run(studio, tmp_path, mode, images, model=model, steps=2, strength=0.5)
    size = (128, 128) if mode is Mode.UPSCALE else (64, 64)
    with Image.open(result.images[0].path) as image:
        assert image.size == size
    assert (result.images[0].width, result.images[0].height) == size


@pytest.mark.parametrize("mode", [Mode.IMG2IMG, Mode.INPAINT, Mode.CONTROLNET])
def test_same_request_same_pixels_and_image_i_uses_seed_plus_i(
    mode: Mode, studio: ModelRegistry, images: dict[str, Path], tmp_path: Path
) -> None:
    batch = run(studio, tmp_path / "batch", mode, images, model="tiny", seed=7, count=2)
    again = run(studio, tmp_path / "again", mode, images, model="tiny", seed=7, count=2)
    single = run(studio, tmp_path / "single", mode, images, model="tiny", seed=8)
    assert [image.seed for image in batch.images] == [7, 8]
    assert [pixels(image.path) for image in batch.images] == [
        pixels(image.path) for image in again.images
    ]
    # Float rounding at another batch size moves a channel by one level at most.
    assert largest_difference(batch.images[1].path, single.images[0].path) <= 1
    assert largest_difference(batch.images[0].path, single.images[0].path) > 1


def test_the_init_image_and_strength_shape_an_image_to_image_result(
    studio: ModelRegistry, images: dict[str, Path], tmp_path: Path
) -> None:
    low = run(studio, tmp_path / "low", Mode.IMG2IMG, images, model="tiny", strength=0.25)
    high = run(studio, tmp_path / "high", Mode.IMG2IMG, images, model="tiny", strength=1.0)
    other = run(
        studio,
        tmp_path / "other",
        Mode.IMG2IMG,
        images,
        model="tiny",
        strength=0.25,
        init_image=str(images["scribble"]),
    )
    assert pixels(low.images[0].path) != pixels(high.images[0].path)
    assert pixels(low.images[0].path) != pixels(other.images[0].path)


def test_the_control_image_and_scale_steer_a_controlnet_result(
    studio: ModelRegistry, images: dict[str, Path], tmp_path: Path
) -> None:
    first = run(studio, tmp_path / "a", Mode.CONTROLNET, images, model="tiny")
    other = run(
        studio,
        tmp_path / "b",
        Mode.CONTROLNET,
        images,
        model="tiny",
        control_image=str(images["other_scribble"]),
    )
    weaker = run(studio, tmp_path / "c", Mode.CONTROLNET, images, model="tiny", control_scale=0.2)
    assert len({pixels(r.images[0].path) for r in (first, other, weaker)}) == 3


def test_a_controlnet_type_the_model_lacks_fails_naming_it(
    studio: ModelRegistry, images: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(BadRequest, match="lineart"):
        run(studio, tmp_path, Mode.CONTROLNET, images, model="tiny", control_type="lineart")


def test_upscale_decodes_in_tiles_and_leaves_the_shared_vae_untiled(
    studio: ModelRegistry, images: dict[str, Path], tmp_path: Path
) -> None:
    vae = studio.get("tiny").pipeline.vae
    tiled: list[bool] = []
    real_decode = vae.decode

    def watching_decode(*args: Any, **kwargs: Any) -> Any:
        tiled.append(vae.use_tiling)
        return real_decode(*args, **kwargs)

    vae.decode = watching_decode
    try:
        run(studio, tmp_path, Mode.UPSCALE, images, model="tiny")
    finally:
        del vae.decode
    assert tiled == [True]
    assert vae.use_tiling is False


def test_a_strength_too_low_for_the_step_count_is_refused_with_the_fix(
    studio: ModelRegistry, images: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(BadRequest, match="at least 10 steps"):
        run(studio, tmp_path, Mode.IMG2IMG, images, model="tiny", steps=4, strength=0.1)


def test_the_recipe_names_mode_checkpoint_scheduler_inputs_and_versions(
    studio: ModelRegistry, images: dict[str, Path], tmp_path: Path
) -> None:
    result = run(
        studio,
        tmp_path,
        Mode.INPAINT,
        images,
        model="tiny",
        sampler="DPM++ 2M Karras",
        strength=0.8,
        seed=3,
    )
    output = result.images[0]
    with Image.open(output.path) as image:
        stored = json.loads(image.text["atelier"])
    assert stored == output.recipe
    assert stored["mode"] == "inpaint"
    assert stored["model"] == "tiny"
    assert stored["checkpoint_sha256"] == studio.get("tiny").checkpoint_sha256
    assert stored["scheduler"]["class"] == "DPMSolverMultistepScheduler"
    assert stored["scheduler"]["options"] == {
        "algorithm_type": "dpmsolver++",
        "use_karras_sigmas": True,
    }
    assert stored["scheduler"]["config"]["use_karras_sigmas"] is True
    assert stored["strength"] == 0.8
    assert stored["inputs"] == {
        "init_image": file_sha256(str(images["photo"])),
        "mask_image": file_sha256(str(images["mask"])),
    }
    assert (stored["seed"], stored["steps"], stored["cfg"]) == (3, 4, 7.0)
    assert set(stored["versions"]) == {"diffusers", "torch", "transformers"}
    assert "control_type" not in stored and "output_dir" not in stored


def test_a_controlnet_recipe_keeps_its_control_settings(
    studio: ModelRegistry, images: dict[str, Path], tmp_path: Path
) -> None:
    result = run(studio, tmp_path, Mode.CONTROLNET, images, model="tiny", control_scale=0.7)
    recipe = result.images[0].recipe
    assert (recipe["control_type"], recipe["control_scale"]) == (ControlType.SCRIBBLE, 0.7)
    assert recipe["inputs"] == {"control_image": file_sha256(str(images["scribble"]))}
    assert "strength" not in recipe


@pytest.mark.parametrize("model", ["tiny", "plain", "xl"])
def test_outpainting_keeps_the_picture_in_the_middle_and_paints_a_new_border(
    model: str, studio: ModelRegistry, images: dict[str, Path], tmp_path: Path
) -> None:
    """On an inpainting checkpoint (tiny), the base model's inpainting (plain) and SDXL."""
    result = run(studio, tmp_path, Mode.OUTPAINT, images, model=model, steps=4, seed=5)
    output = result.images[0]
    picture = init_image(str(images["photo"]), ZOOMED_OUT.width, ZOOMED_OUT.height)
    canvas = outpaint_canvas(picture, 64, 64, ZOOMED_OUT)
    with Image.open(output.path) as image:
        assert image.size == (64, 64)
        made = np.asarray(image.convert("RGB")).astype(int)
    seam = 3 * seam_blur(64, 64)
    # Away from the seams, the picture's own pixels (not redrawn by the model).
    inner = np.s_[16 + seam : 48 - seam, 16 + seam : 48 - seam]
    kept = np.asarray(picture).astype(int)[seam:-seam, seam:-seam]
    assert np.abs(made[inner] - kept).max() <= 1
    # The border is the model's: it is not the edge-colour fill it started from.
    border = np.asarray(canvas.mask) == 255
    filled = np.asarray(canvas.image).astype(int)
    assert np.abs(made[border] - filled[border]).mean() > 10
    assert output.recipe["frame"] == ZOOMED_OUT.model_dump()
    assert output.recipe["inputs"] == {"init_image": file_sha256(str(images["photo"]))}
