"""Attachment checks: what /imagine and `atelier generate` accept as input images.

Every hostile file is made here, in the test: by Pillow where it can write the
format, by hand (zlib and struct) where the file must lie about itself.
"""

from __future__ import annotations

import io
import random
import re
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bot.jobs.inputs import (
    MAX_DECODED_BYTES,
    MAX_INPUT_SIDE,
    looks_like_drawing,
    read_image,
    save_inputs,
    to_eight_bits,
)
from bot.jobs.spec import BadInput

LIMIT = 2**20
ACCEPTED = "please attach a PNG, JPEG, WebP or GIF image."
TOO_LARGE = "pixels; the limit is 4096 pixels a side (16.8 MP)."
DAMAGED = "The `image` attachment is damaged or cut short; save it again and attach it."
FIRST_FRAME = "The `image` attachment is animated; I used its first frame."
ORIENTATION_NORMAL = Image.Exif()
ORIENTATION_NORMAL[0x0112] = 1


def encoded(image: Image.Image, image_format: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def png(size: tuple[int, int], mode: str = "RGB", colour: object = "red") -> bytes:
    return encoded(Image.new(mode, size, colour))  # type: ignore[arg-type]


def noise(size: tuple[int, int]) -> Image.Image:
    """A photo-like picture: JPEG cannot squeeze it to a few bytes, so halving it cuts pixels."""
    pixels = random.Random(7).randbytes(size[0] * size[1] * 3)
    return Image.frombytes("RGB", size, pixels)


def first_half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def half_white_mask(size: tuple[int, int], mode: str = "L") -> bytes:
    """Black (keep) on the left, white (repaint) on the right."""
    mask = Image.new(mode, size, "black")
    mask.paste("white", (size[0] // 2, 0, size[0], size[1]))
    return encoded(mask)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def handmade_png(width: int, height: int, depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG written byte by byte: it says whatever IHDR we choose, whatever follows."""
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(rows, 9))
        + png_chunk(b"IEND", b"")
    )


def png_bomb(width: int, height: int) -> bytes:
    """A greyscale PNG that declares width x height but holds a few rows of compressed zeros."""
    return handmade_png(width, height, 8, 0, bytes((width + 1) * 4))


def gif_bomb() -> bytes:
    """A real small GIF whose logical screen claims 65535 x 65535."""
    data = bytearray(encoded(Image.new("P", (16, 16)), "GIF"))
    data[6:10] = struct.pack("<HH", 65535, 65535)
    return bytes(data)


def webp_bomb() -> bytes:
    """A real extended (VP8X) WebP whose canvas claims 16383 x 16383, WebP's largest."""
    translucent = Image.new("RGBA", (16, 16), (255, 0, 0, 128))  # alpha makes it extended
    data = bytearray(encoded(translucent, "WEBP"))
    assert data[12:16] == b"VP8X"
    data[24:30] = (16382).to_bytes(3, "little") * 2
    return bytes(data)


def jpeg_bomb() -> bytes:
    """A real small JPEG whose frame header claims 60000 x 60000."""
    data = bytearray(encoded(Image.new("RGB", (16, 16)), "JPEG"))
    frame = data.index(b"\xff\xc0")
    data[frame + 5 : frame + 9] = struct.pack(">HH", 60000, 60000)
    return bytes(data)


def assert_one_friendly_sentence(message: str, tmp_path: Path) -> None:
    """What the member reads: one sentence, no exception text, no path."""
    assert message.endswith(".") and ". " not in message, message
    assert str(tmp_path) not in message and "Error" not in message and "\n" not in message


def refusal(data: bytes, tmp_path: Path, role: str = "image") -> str:
    """The refusal save_inputs gives for `data`, having checked that nothing was written."""
    attachments = {"image": png((64, 64)), role: data}
    with pytest.raises(BadInput) as raised:
        save_inputs(attachments, tmp_path / "inputs", tmp_path, LIMIT)
    assert not (tmp_path / "inputs").exists()
    message = str(raised.value)
    assert_one_friendly_sentence(message, tmp_path)
    return message


def saved(attachments: dict[str, bytes], tmp_path: Path) -> dict[str, Image.Image]:
    """Run save_inputs and read back each saved file."""
    found = save_inputs(attachments, tmp_path / "inputs", tmp_path, LIMIT)
    images = {}
    for role in attachments:
        entry = getattr(found, role)
        with Image.open(tmp_path / entry.path) as image:
            images[role] = image.copy()
        assert (entry.width, entry.height) == images[role].size
    return images


def test_inputs_are_saved_as_png_with_paths_relative_to_the_data_dir(tmp_path: Path) -> None:
    found = save_inputs(
        {"image": png((80, 48), "P"), "mask": half_white_mask((40, 24), "RGBA")},
        tmp_path / "inputs/abc",
        tmp_path,
        LIMIT,
    )
    assert found.image is not None and found.mask is not None and found.control is None
    assert (found.image.path, found.image.width, found.image.height) == (
        "inputs/abc/image.png",
        80,
        48,
    )
    assert found.notices == ()
    with Image.open(tmp_path / found.image.path) as image:
        assert (image.format, image.mode) == ("PNG", "RGB")
    with Image.open(tmp_path / found.mask.path) as mask:
        assert mask.mode == "RGBA"  # the engine reduces a mask to one channel


def test_exif_rotation_is_applied(tmp_path: Path) -> None:
    photo = Image.new("RGB", (60, 30), "blue")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    assert read_image(encoded(photo, "JPEG", exif=exif), "image", LIMIT).image.size == (30, 60)


@pytest.mark.parametrize(
    ("image_format", "options"),
    [
        ("PNG", {}),
        ("JPEG", {}),
        ("JPEG", {"progressive": True}),
        ("WEBP", {}),
        ("WEBP", {"lossless": True}),
        ("WEBP", {"exif": ORIENTATION_NORMAL.tobytes()}),  # an extended (VP8X) WebP
        ("GIF", {}),
    ],
)
def test_each_accepted_format_is_read_at_its_size(
    image_format: str, options: dict[str, object]
) -> None:
    data = encoded(Image.new("RGB", (72, 40), "green"), image_format, **options)
    found = read_image(data, "image", LIMIT)
    assert found.image.size == (72, 40) and found.notice is None
    with pytest.raises(BadInput, match=re.escape(f"is 4100×20 {TOO_LARGE}")):
        read_image(encoded(Image.new("RGB", (4100, 20)), image_format, **options), "image", LIMIT)


def pillow_writes(image_format: str) -> Callable[[], bytes]:
    return lambda: encoded(Image.new("RGB", (32, 32), "red"), image_format)


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda: b"", "empty"),
        (lambda: b"hello, I am a text file named cat.png\n", "not an image I can read"),
        (pillow_writes("TIFF"), "a TIFF image, which I do not accept"),
        (pillow_writes("BMP"), "a BMP image, which I do not accept"),
        (pillow_writes("ICO"), "an ICO icon, which I do not accept"),
        (pillow_writes("PPM"), "a PNM (PPM/PGM/PBM) image, which I do not accept"),
        (pillow_writes("TGA"), "a TGA image, which I do not accept"),
        (
            lambda: b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n",
            "a PDF document, which I do not accept",
        ),
        (
            lambda: (
                b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"'
                b' width="64" height="64"><rect width="64" height="64"/></svg>'
            ),
            "an SVG drawing, which I do not accept",
        ),
    ],
    ids=["empty", "text", "tiff", "bmp", "ico", "ppm", "tga", "pdf", "svg"],
)
def test_files_outside_the_allowlist_are_refused_naming_the_accepted_formats(
    make: Callable[[], bytes], what: str, tmp_path: Path
) -> None:
    assert refusal(make(), tmp_path) == f"The `image` attachment is {what}; {ACCEPTED}"


@pytest.mark.parametrize(
    "make",
    [
        lambda: png_bomb(60000, 60000),
        lambda: png_bomb(10000, 10000),  # between Pillow's warning and its error
        gif_bomb,
        webp_bomb,
        jpeg_bomb,
    ],
    ids=["png-60000", "png-10000", "gif", "webp", "jpeg"],
)
def test_decompression_bomb_is_refused_from_its_header_with_its_real_size(
    make: Callable[[], bytes], tmp_path: Path
) -> None:
    data = make()
    assert len(data) < 10_000
    message = refusal(data, tmp_path)
    assert message.startswith("The `image` is ") and message.endswith(TOO_LARGE)
    width, height = (int(side) for side in message.split()[3].split("×"))
    assert width * height > Image.MAX_IMAGE_PIXELS  # type: ignore[operator]


def test_png_bomb_message_gives_the_size_pillow_would_have_refused_to_open(
    tmp_path: Path,
) -> None:
    bomb = png_bomb(60000, 60000)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(bomb))
    assert refusal(bomb, tmp_path) == f"The `image` is 60000×60000 {TOO_LARGE}"


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ((1, 1), "The `image` is 1×1 pixels; each side must be at least 16 pixels."),
        ((8, 64), "The `image` is 8×64 pixels; each side must be at least 16 pixels."),
        ((4100, 20), f"The `image` is 4100×20 {TOO_LARGE}"),
    ],
)
def test_images_too_small_or_too_large_are_refused_with_their_size(
    size: tuple[int, int], message: str, tmp_path: Path
) -> None:
    assert refusal(png(size, "1"), tmp_path) == message


@pytest.mark.parametrize(
    ("depth", "colour_type", "message"),
    [
        (
            16,
            6,
            "The `image` is a 16-bit 4096×4096 image, more than I can read; save it with 8"
            " bits per channel or at most 2896×2896 pixels.",
        ),
        (
            16,
            2,
            "The `image` is a 16-bit 4096×4096 image, more than I can read; save it with 8"
            " bits per channel or at most 3344×3344 pixels.",
        ),
    ],
    ids=["rgba-16", "rgb-16"],
)
def test_an_image_deeper_than_the_decode_budget_is_refused_from_its_header(
    depth: int, colour_type: int, message: str, tmp_path: Path
) -> None:
    # A few rows of zeros: decoding would find the file cut short; the header check
    # speaks first.
    data = handmade_png(4096, 4096, depth, colour_type, bytes(4096 * 8 + 1))
    assert refusal(data, tmp_path) == message


def test_a_deep_image_within_the_decode_budget_is_read(tmp_path: Path) -> None:
    at_limit = handmade_png(2896, 2896, 16, 6, bytes(2896 * 8 + 1))
    grey = handmade_png(4096, 4096, 16, 0, bytes(4096 * 2 + 1))
    images = saved({"image": at_limit, "control": grey}, tmp_path)
    assert (images["image"].size, images["control"].size) == ((2896, 2896), (4096, 4096))


# Reading and saving one image, as save_inputs does, in a fresh interpreter: the growth
# of its peak resident memory over what it held before, in bytes.
MEASURE_PEAK = """
import gc, io, sys, tempfile
from pathlib import Path
from PIL import Image
from bot.jobs.inputs import save_inputs

def resident(field: str) -> int:
    # Linux's own counts for this program (getrusage's peak can be its parent's).
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024

folder = Path(tempfile.mkdtemp())
warm = io.BytesIO()
Image.new("RGBA", (32, 32)).save(warm, "PNG")
save_inputs({"image": warm.getvalue()}, folder / "warm", folder, 2**30)  # plugins loaded
data = Path(sys.argv[1]).read_bytes()
gc.collect()
before = resident("VmRSS")
save_inputs({sys.argv[2]: data}, folder / "inputs", folder, 2**30)
print(resident("VmHWM") - before)
"""


def half_transparent(mode: str) -> Image.Image:
    """A full-size image, opaque on its right half; a palette one keys index 0 out."""
    side = MAX_INPUT_SIDE
    if mode == "P":
        image = Image.new("P", (side, side), 1)
        image.putpalette([0, 0, 0, 255, 0, 0])
        image.paste(0, (0, 0, side // 2, side))
        image.info["transparency"] = 0
        return image
    image = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    image.paste((0, 0, 0, 0), (0, 0, side // 2, side))
    return image


@pytest.mark.parametrize(
    ("make", "role"),
    [
        (lambda: Image.new("I;16", (MAX_INPUT_SIDE, MAX_INPUT_SIDE), 1000), "image"),
        (lambda: half_transparent("RGBA"), "image"),
        (lambda: half_transparent("RGBA"), "mask"),
        (lambda: half_transparent("P"), "image"),
    ],
    ids=["grey-16-bit", "rgba", "rgba-mask", "palette-transparent"],
)
def test_reading_a_largest_image_peaks_under_three_times_its_decode_budget(
    make: Callable[[], Image.Image], role: str, tmp_path: Path
) -> None:
    image = make()
    path = tmp_path / "large.png"
    image.save(path, format="PNG", transparency=image.info.get("transparency"))
    assert path.stat().st_size < 100_000  # a small file, the whole budget once decoded
    measured = subprocess.run(
        [sys.executable, "-c", MEASURE_PEAK, str(path), role],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    peak = int(measured.stdout)
    assert peak < 3 * MAX_DECODED_BYTES, f"{peak / 2**20:.0f} MiB"


def test_a_file_over_the_byte_limit_is_refused_before_reading_it(tmp_path: Path) -> None:
    data = b"\x89PNG\r\n\x1a\n" + bytes(LIMIT)
    assert refusal(data, tmp_path) == "The `image` attachment is 1.0 MB; the limit is 1 MB."


@pytest.mark.parametrize(
    "make",
    [
        lambda: first_half(encoded(noise((128, 128)), "JPEG")),
        lambda: first_half(encoded(noise((128, 128)))),
        lambda: png((64, 64))[:20],  # cut inside the header
        lambda: b"GIF89a",
        lambda: b"\xff\xd8\xff\xe0",
        lambda: b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    ],
    ids=["jpeg-half", "png-half", "png-header", "gif-signature", "jpeg-signature", "webp-riff"],
)
def test_a_truncated_file_is_refused_as_damaged(make: Callable[[], bytes], tmp_path: Path) -> None:
    assert refusal(make(), tmp_path) == DAMAGED


@pytest.mark.parametrize(
    ("image_format", "options"),
    [("GIF", {}), ("PNG", {}), ("WEBP", {"lossless": True})],
)
def test_an_animated_image_gives_its_first_frame_and_says_so(
    image_format: str, options: dict[str, object], tmp_path: Path
) -> None:
    red, blue = Image.new("RGB", (32, 32), "red"), Image.new("RGB", (32, 32), "blue")
    data = encoded(red, image_format, save_all=True, append_images=[blue], **options)
    found = save_inputs({"image": data}, tmp_path / "inputs", tmp_path, LIMIT)
    assert found.notices == (FIRST_FRAME,)
    assert found.image is not None
    with Image.open(tmp_path / found.image.path) as image:
        assert image.getpixel((16, 16)) == (255, 0, 0)


def test_a_still_gif_is_accepted_without_a_notice(tmp_path: Path) -> None:
    found = save_inputs(
        {"control": encoded(Image.new("RGB", (32, 32), "red"), "GIF")},
        tmp_path / "inputs",
        tmp_path,
        LIMIT,
    )
    assert found.notices == () and found.control is not None


def test_a_cmyk_jpeg_keeps_its_colours(tmp_path: Path) -> None:
    red = Image.new("CMYK", (32, 32), (0, 255, 255, 0))
    image = saved({"image": encoded(red, "JPEG", quality=95)}, tmp_path)["image"]
    assert image.mode == "RGB"
    r, g, b = image.getpixel((16, 16))  # type: ignore[misc]
    assert r > 240 and g < 15 and b < 15


GRADIENT = np.tile(np.linspace(0, 0xFFFF, 256).round().astype(np.uint16), (16, 1))


def test_sixteen_bit_png_keeps_its_picture(tmp_path: Path) -> None:
    sixteen = Image.fromarray(GRADIENT)
    assert sixteen.mode == "I;16"
    image = saved({"image": encoded(sixteen)}, tmp_path)["image"]
    expected = GRADIENT / 257
    assert np.abs(np.asarray(image)[..., 0] - expected).max() <= 1
    assert np.asarray(image).std() > 50  # a gradient, not a white sheet


def test_sixteen_bit_colour_png_keeps_its_picture(tmp_path: Path) -> None:
    rgb = np.stack([GRADIENT, 0xFFFF - GRADIENT, np.full_like(GRADIENT, 0x8000)], axis=-1)
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb)
    image = saved({"image": handmade_png(256, 16, 16, 2, rows)}, tmp_path)["image"]
    assert np.abs(np.asarray(image) - rgb / 257).max() <= 1


def test_sixteen_bit_grey_with_alpha_is_laid_on_white(tmp_path: Path) -> None:
    alpha = np.zeros_like(GRADIENT)
    alpha[:, :128] = 0xFFFF  # left half opaque, right half transparent
    pixels = np.stack([GRADIENT, alpha], axis=-1)
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)
    image = np.asarray(saved({"image": handmade_png(256, 16, 16, 4, rows)}, tmp_path)["image"])
    assert np.abs(image[:, :128, 0] - GRADIENT[:, :128] / 257).max() <= 1
    assert (image[:, 128:] == 255).all()


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_sixteen_bit_modes_are_scaled_to_eight_bits_not_clipped(mode: str) -> None:
    values = GRADIENT.astype({"I;16": "<u2", "I;16B": ">u2", "I": "=i4"}[mode])
    image = Image.frombytes(mode, (256, 16), values.tobytes())
    eight = to_eight_bits(image)
    assert eight.mode == "L"
    assert np.abs(np.asarray(eight) - GRADIENT / 257).max() <= 0.5


def test_a_palette_image_with_transparency_is_laid_on_white(tmp_path: Path) -> None:
    picture = Image.new("P", (32, 32), 1)
    picture.putpalette([0, 0, 0, 255, 0, 0])
    picture.paste(0, (0, 0, 16, 32))  # left half: index 0, made transparent
    image = saved({"image": encoded(picture, transparency=0)}, tmp_path)["image"]
    assert (image.getpixel((4, 4)), image.getpixel((24, 4))) == ((255, 255, 255), (255, 0, 0))


def test_a_palette_image_without_transparency_keeps_its_colours(tmp_path: Path) -> None:
    picture = Image.new("P", (32, 32), 1)
    picture.putpalette([0, 0, 0, 0, 0, 255])
    picture.paste(0, (0, 0, 16, 32))
    image = saved({"control": encoded(picture)}, tmp_path)["control"]
    assert (image.getpixel((4, 4)), image.getpixel((24, 4))) == ((0, 0, 0), (0, 0, 255))


@pytest.mark.parametrize(("mode", "clear"), [("RGBA", (0, 0, 255, 0)), ("LA", (0, 0))])
def test_transparent_parts_of_an_image_or_control_are_laid_on_white(
    mode: str, clear: tuple[int, ...], tmp_path: Path
) -> None:
    picture = Image.new(mode, (32, 32), clear)
    picture.paste((0, 255) if mode == "LA" else (0, 0, 0, 255), (0, 0, 16, 32))
    for role in ("image", "control"):
        image = saved({role: encoded(picture)}, tmp_path / role)[role]
        assert image.mode == "RGB"
        assert (image.getpixel((4, 4)), image.getpixel((24, 4))) == ((0, 0, 0), (255, 255, 255))


def test_a_mask_keeps_its_alpha_for_the_engine(tmp_path: Path) -> None:
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    mask.paste((255, 255, 255, 255), (32, 0, 64, 64))  # white paint on a transparent layer
    saved_mask = saved({"image": png((64, 64)), "mask": encoded(mask)}, tmp_path)["mask"]
    assert saved_mask.mode == "RGBA"
    assert saved_mask.getpixel((8, 8)) == (0, 0, 0, 0)


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (
            png((64, 64), "L", 0),
            "The `mask` has no white in it, so nothing would be repainted; paint white where"
            " the image should change and black where it should stay.",
        ),
        (
            png((64, 64), "RGBA", (255, 255, 255, 0)),  # white, but all transparent
            "The `mask` has no white in it, so nothing would be repainted; paint white where"
            " the image should change and black where it should stay.",
        ),
        (
            png((64, 64), "RGB", "white"),
            "The `mask` is white all over, so the whole image would be repainted; leave the"
            " mask out to change the whole image, or paint black what should stay.",
        ),
        (
            half_white_mask((64, 32)),
            "The `mask` is 64×32 pixels but the `image` is 64×64, another shape; make the mask"
            " from the image itself so both have the same shape.",
        ),
    ],
    ids=["black", "transparent", "white", "other-shape"],
)
def test_masks_that_cannot_mean_what_the_member_wants_are_refused(
    mask: bytes, message: str, tmp_path: Path
) -> None:
    assert refusal(mask, tmp_path, role="mask") == message


@pytest.mark.parametrize(("image", "mask"), [((128, 64), (64, 32)), ((100, 67), (150, 100))])
def test_mask_of_same_shape_but_other_size_is_accepted_for_resizing(
    image: tuple[int, int], mask: tuple[int, int], tmp_path: Path
) -> None:
    found = saved({"image": png(image), "mask": half_white_mask(mask)}, tmp_path)
    assert (found["image"].size, found["mask"].size) == (image, mask)


def test_nothing_is_written_when_any_attachment_is_bad(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="`mask`"):
        save_inputs({"image": png((64, 64)), "mask": b"junk"}, tmp_path / "in", tmp_path, LIMIT)
    assert not (tmp_path / "in").exists()


def _drawing(ground: str, ink: object) -> Image.Image:
    image = Image.new("RGB", (200, 150), ground)
    draw = ImageDraw.Draw(image)
    draw.line((10, 10, 190, 140), fill=ink, width=4)  # type: ignore[arg-type]
    draw.ellipse((50, 30, 120, 100), outline=ink, width=3)  # type: ignore[arg-type]
    return image


def _photo() -> Image.Image:
    ramp = np.linspace(20, 235, 200)[None, :, None] * np.ones((150, 1, 3))
    noisy = ramp + np.random.default_rng(0).normal(0, 20, ramp.shape)
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8))


@pytest.mark.parametrize(
    ("image", "drawing"),
    [
        (_drawing("white", "black"), True),
        (_drawing("black", "white"), True),  # chalk on a blackboard
        (_drawing((250, 245, 235), (30, 30, 200)), True),  # blue pen on cream paper
        (_photo(), False),
        (Image.new("RGB", (64, 64), "red"), False),
        (Image.new("RGB", (64, 64), (128, 128, 128)), False),
    ],
)
def test_drawings_are_told_from_photos(image: Image.Image, drawing: bool, tmp_path: Path) -> None:
    path = tmp_path / "control.png"
    image.save(path)
    assert looks_like_drawing(path) is drawing
