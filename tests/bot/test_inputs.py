"""Attachment checks: what /imagine and `atelier generate` accept as input images."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from bot.jobs.inputs import read_image, save_inputs
from bot.jobs.spec import BadInput

LIMIT = 2**20


def png(size: tuple[int, int], mode: str = "RGB", colour: object = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG")  # type: ignore[arg-type]
    return buffer.getvalue()


def test_inputs_are_saved_as_png_with_paths_relative_to_the_data_dir(tmp_path: Path) -> None:
    found = save_inputs(
        {"image": png((80, 48), "P"), "mask": png((40, 24), "RGBA")},
        tmp_path / "inputs/abc", tmp_path, LIMIT,
    )  # fmt: skip
    assert found.image is not None and found.mask is not None and found.control is None
    assert (found.image.path, found.image.width, found.image.height) == (
        "inputs/abc/image.png", 80, 48,
    )  # fmt: skip
    with Image.open(tmp_path / found.image.path) as image:
        assert (image.format, image.mode) == ("PNG", "RGB")
    with Image.open(tmp_path / found.mask.path) as mask:
        assert mask.mode == "RGBA"  # the engine reduces a mask to one channel


def test_exif_rotation_is_applied(tmp_path: Path) -> None:
    photo = Image.new("RGB", (60, 30), "blue")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", exif=exif)
    assert read_image(buffer.getvalue(), "image", LIMIT).size == (30, 60)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GIF89a not really", "is not an image I can read"),
        (b"%PDF-1.7 hello", "is not an image I can read"),
        (png((8, 8)), "is 8×8; each side must be 16-4096 pixels"),
        (png((4100, 20), "1"), "is 4100×20"),
        (b"\x89PNG" + b"0" * (LIMIT + 1), "MB; the limit is 1 MB"),
    ],
)
def test_bad_attachments_are_refused_with_the_reason(data: bytes, message: str) -> None:
    with pytest.raises(BadInput) as raised:
        read_image(data, "image", LIMIT)
    assert message in str(raised.value) and "`image`" in str(raised.value)


def test_a_truncated_png_is_refused(tmp_path: Path) -> None:
    data = png((64, 64), colour=None)
    with pytest.raises(BadInput, match="not an image I can read"):
        read_image(data[: len(data) // 2], "control", LIMIT)


def test_nothing_is_written_when_any_attachment_is_bad(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="`mask`"):
        save_inputs({"image": png((64, 64)), "mask": b"junk"}, tmp_path / "in", tmp_path, LIMIT)
    assert not (tmp_path / "in").exists()
