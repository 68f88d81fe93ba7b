"""Input images are read, reduced to what the mode needs and sized to the job."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from engine.inputs import (
    blend_seams,
    control_image,
    init_image,
    mask_image,
    outpaint_canvas,
    seam_blur,
)
from engine.protocol import ControlType, Frame


def test_init_image_is_rgb_at_the_job_size(tmp_path: Path) -> None:
    path = tmp_path / "grey.png"
    Image.new("L", (100, 30), 128).save(path)
    image = init_image(str(path), 64, 48)
    assert (image.mode, image.size) == ("RGB", (64, 48))


def test_mask_of_other_size_is_resized_to_the_init_image(images: dict[str, Path]) -> None:
    mask = mask_image(str(images["mask"]), 64, 80)
    assert (mask.mode, mask.size) == ("L", (64, 80))
    levels = np.asarray(mask)
    # The left half was white (repaint) and the right half black (keep), at any size.
    assert levels[:, :30].min() == 255 and levels[:, 34:].max() == 0


def test_a_colour_mask_is_reduced_to_one_channel(tmp_path: Path) -> None:
    path = tmp_path / "colour.png"
    colour = Image.new("RGB", (64, 64), (0, 0, 0))
    ImageDraw.Draw(colour).rectangle((0, 0, 31, 63), fill=(255, 255, 255))
    colour.save(path)
    mask = mask_image(str(path), 64, 64)
    assert mask.mode == "L"
    assert np.asarray(mask)[:, :32].min() == 255 and np.asarray(mask)[:, 32:].max() == 0


def test_an_rgba_mask_counts_transparent_pixels_as_keep(tmp_path: Path) -> None:
    path = tmp_path / "layer.png"
    layer = Image.new("RGBA", (64, 64), (255, 255, 255, 0))  # white but transparent
    ImageDraw.Draw(layer).rectangle((0, 0, 31, 63), fill=(255, 255, 255, 255))
    layer.save(path)
    levels = np.asarray(mask_image(str(path), 64, 64))
    assert levels.ndim == 2
    assert levels[:, :32].min() == 255 and levels[:, 32:].max() == 0


def test_a_dark_on_white_scribble_is_inverted_to_light_lines_on_black(
    images: dict[str, Path],
) -> None:
    for control_type in (ControlType.SCRIBBLE, ControlType.LINEART):
        levels = np.asarray(control_image(str(images["scribble"]), control_type, 64, 64))
        assert levels.shape == (64, 64, 3)
        assert np.median(levels) == 0  # the ground is black now
        assert levels.max() == 255  # and the line is white


def test_a_light_on_black_drawing_is_used_as_drawn(tmp_path: Path) -> None:
    path = tmp_path / "light.png"
    drawing = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(drawing).line((0, 32, 63, 32), fill=255, width=3)
    drawing.save(path)
    levels = np.asarray(control_image(str(path), ControlType.SCRIBBLE, 64, 64))
    assert levels[32, 10].tolist() == [255, 255, 255] and levels[5, 5].tolist() == [0, 0, 0]


def test_canny_extracts_the_edges_of_a_photo(tmp_path: Path) -> None:
    path = tmp_path / "square.png"
    photo = Image.new("RGB", (64, 64), (20, 20, 20))
    ImageDraw.Draw(photo).rectangle((16, 16, 47, 47), fill=(220, 220, 220))
    photo.save(path)
    edges = np.asarray(control_image(str(path), ControlType.CANNY, 64, 64))[:, :, 0]
    assert set(np.unique(edges)) == {0, 255}
    assert edges[32, 32] == 0 and edges[2, 2] == 0  # flat inside and outside
    assert edges[15:18, 32].max() == 255  # the square's top edge


def test_a_ready_control_map_is_used_as_given_at_the_job_size(images: dict[str, Path]) -> None:
    given = control_image(str(images["photo"]), ControlType.NONE, 96, 80)
    with Image.open(images["photo"]) as original:
        assert given.tobytes() == original.convert("RGB").tobytes()
    assert control_image(str(images["photo"]), ControlType.NONE, 64, 64).size == (64, 64)


def striped_picture(width: int, height: int) -> Image.Image:
    """A picture whose every edge has its own colour, and a dark middle."""
    picture = Image.new("RGB", (width, height), (20, 20, 20))
    draw = ImageDraw.Draw(picture)
    draw.rectangle((0, 0, width - 1, 3), fill=(250, 0, 0))  # top: red
    draw.rectangle((0, height - 4, width - 1, height - 1), fill=(0, 0, 250))  # bottom: blue
    return picture


def test_an_outpainting_canvas_holds_the_picture_at_its_frame_and_masks_the_border() -> None:
    frame = Frame(left=40, top=24, width=48, height=64)
    picture = striped_picture(48, 64)
    canvas = outpaint_canvas(picture, 128, 112, frame)
    assert canvas.image.size == canvas.mask.size == (128, 112)
    assert (canvas.image.mode, canvas.mask.mode) == ("RGB", "L")
    on_canvas = np.asarray(canvas.image)
    inside = np.s_[24:88, 40:88]
    # The picture's own pixels, untouched, where the frame says.
    assert np.array_equal(on_canvas[inside], np.asarray(picture))
    mask = np.asarray(canvas.mask)
    seam = 3 * seam_blur(128, 112)
    # Black (kept) well inside the picture, white (painted) well outside, soft in between.
    assert mask[24 + seam : 88 - seam, 40 + seam : 88 - seam].max() == 0
    assert mask[:, : 40 - seam].min() == 255 and mask[: 24 - seam].min() == 255
    assert mask[:, 88 + seam :].min() == 255 and mask[88 + seam :].min() == 255
    assert 0 < mask[56, 40] < 255 and 0 < mask[24, 64] < 255
    # The border starts from the nearest edge's colours: red above, blue below.
    above, below = on_canvas[2, 64], on_canvas[108, 64]
    assert above[0] > 150 and above[2] < 60, above
    assert below[2] > 150 and below[0] < 60, below


def test_an_outpainting_canvas_wants_the_picture_at_its_frames_size() -> None:
    frame = Frame(left=0, top=0, width=32, height=32)
    with pytest.raises(ValueError, match="frame 32x32"):
        outpaint_canvas(striped_picture(40, 32), 64, 64, frame)


def test_blending_keeps_the_pictures_pixels_inside_and_the_paint_outside() -> None:
    frame = Frame(left=16, top=16, width=32, height=32)
    picture = striped_picture(32, 32)
    canvas = outpaint_canvas(picture, 64, 64, frame)
    painted = Image.new("RGB", (64, 64), (0, 200, 0))
    blended = np.asarray(blend_seams(painted, canvas))
    seam = 3 * seam_blur(64, 64)
    inner = np.s_[16 + seam : 48 - seam, 16 + seam : 48 - seam]
    assert np.array_equal(blended[inner], np.asarray(picture)[seam:-seam, seam:-seam])
    assert (blended[:, : 16 - seam] == (0, 200, 0)).all()
    # Across the seam, the two mix.
    assert 0 < blended[32, 16][1] < 200
