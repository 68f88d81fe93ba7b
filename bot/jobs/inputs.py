"""Attached images: checked before anything is queued, then saved as plain PNG files.

The same checks serve /imagine attachments, `atelier generate --image` and the HTTP
API. They run cheapest first, each before the costlier next step: the byte size,
the format sniffed from the file's first bytes (an allowlist), the pixel size and
bit depth read from the header, and only then decoding, once per image. An image
that fails any of them becomes a BadInput the member can act on: one sentence,
never an exception's text or a path. Decoding is CPU work: callers on the event
loop run `save_inputs` in a thread.
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
from PIL import Image, ImageChops, ImageOps

from engine.protocol import MAX_REFERENCES

from .spec import BadInput, InputImage, Inputs

# Larger inputs are refused before decoding: a small file can expand to
# gigabytes of pixels (a "decompression bomb"). This is far below Pillow's own
# MAX_IMAGE_PIXELS, so Pillow's bomb error never speaks before we do.
MAX_INPUT_SIDE = 4096
MIN_INPUT_SIDE = 16
# Decoding holds every sample in memory, so what the header declares is bounded
# before any pixel is read: 8-bit RGBA at the side limit (64 MiB); a 16-bit colour
# image gets fewer pixels. The steps after decoding work in place or one channel at
# a time, so reading and saving one peaks under three times this (tests/bot/test_inputs.py
# measures it).
MAX_DECODED_BYTES = MAX_INPUT_SIDE * MAX_INPUT_SIDE * 4
# Pillow decodes a WebP as RGB or RGBA, whatever its header says.
_WEBP_CHANNELS = 4
# PNG colour types: their channels (palette indices are one).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
ROLES = ("image", "mask", "control")
# Roles whose images are reference images (Inputs.references, in this order): /imagine's
# `sref` (a style reference), /blend's image1 to image5.
REFERENCE_ROLES = ("sref", *(f"image{n}" for n in range(1, MAX_REFERENCES + 1)))
ACCEPTED = "a PNG, JPEG, WebP or GIF image"
# A mask may differ this much in shape from its image: rounding when someone scaled it.
MASK_ASPECT_TOLERANCE = 0.01
# The inpainting pipeline binarises the mask at half intensity: at or above repaints.
_REPAINT_LEVEL = 128
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# Each 16-bit value's nearest 8-bit one: indexing this table costs one byte a pixel,
# where arithmetic on the samples would hold several 8-byte copies of them.
_EIGHT_BITS = ((np.arange(0x10000, dtype=np.uint32) * 255 + 0x7FFF) // 0xFFFF).astype(np.uint8)
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
# JPEG start-of-frame markers (C4, C8 and CC are other segments).
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Files people attach by mistake, told apart so the refusal can say what they sent.
_REFUSED_SIGNATURES = (
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x00\x00\x01\x00", "an ICO icon"),
    (b"%PDF", "a PDF document"),
    (b"8BPS", "a Photoshop document"),
    (b"qoif", "a QOI image"),
    (b"\xff\x0a", "a JPEG XL image"),
    (b"\x00\x00\x00\x0cJXL ", "a JPEG XL image"),
)


@dataclass(frozen=True)
class CheckedImage:
    """An attachment decoded and made ready to save, with what the member should be told."""

    image: Image.Image
    notice: str | None = None


@dataclass(frozen=True)
class _Header:
    """What a file declares about its pixels, read without decoding any."""

    width: int
    height: int
    channels: int
    bits: int  # per channel

    @property
    def decoded_bytes(self) -> int:
        return self.width * self.height * self.channels * math.ceil(self.bits / 8)


def read_image(data: bytes, role: str, max_bytes: int) -> CheckedImage:
    """Decode one attachment (first frame, EXIF orientation applied) or raise BadInput.

    An image or control image comes back RGB, transparency laid on white; a
    mask keeps its alpha (the engine reads transparent as keep).
    """
    decoded = decode_image(data, role, max_bytes)
    return finish(decoded.image, role, decoded.notice)


def decode_image(data: bytes, role: str, max_bytes: int) -> CheckedImage:
    """The checks, then the one decode of an attachment (first frame, EXIF orientation
    applied, 8 bits a channel), in the mode it came in (alpha kept); or BadInput."""
    if len(data) > max_bytes:
        raise BadInput(
            f"The `{role}` attachment is {len(data) / 2**20:.1f} MB;"
            f" the limit is {max_bytes / 2**20:g} MB."
        )
    image_format = _sniff(data)
    if image_format is None:
        raise BadInput(f"The `{role}` attachment is {_kind_of(data)}; please attach {ACCEPTED}.")
    damaged = BadInput(
        f"The `{role}` attachment is damaged or cut short; save it again and attach it."
    )
    try:
        header = _header(data, image_format)
    except (ValueError, IndexError, KeyError, struct.error):
        raise damaged from None
    _check_size(role, header.width, header.height)
    _check_decoded_bytes(role, header)
    try:
        with Image.open(io.BytesIO(data), formats=[image_format]) as opened:
            _check_size(role, *opened.size)  # Pillow's reading, should it differ from ours
            animated = bool(getattr(opened, "is_animated", False))
            opened.load()
            ImageOps.exif_transpose(opened, in_place=True)  # a copy otherwise
            image: Image.Image = opened
    except BadInput:
        raise
    except Image.DecompressionBombError:  # a GIF frame larger than its declared screen
        raise BadInput(
            f"The `{role}` is larger than the limit of {MAX_INPUT_SIDE} pixels a side;"
            " please attach a smaller image."
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error):
        raise damaged from None
    notice = f"The `{role}` attachment is animated; I used its first frame." if animated else None
    return CheckedImage(to_eight_bits(image), notice)


def finish(image: Image.Image, role: str, notice: str | None = None) -> CheckedImage:
    """A decoded image made ready for its role: a mask as the engine reads one (refused
    when it would repaint nothing or everything), anything else RGB on white."""
    if role == "mask":
        mask = _as_mask(image)
        _check_mask_paints_something(mask)
        return CheckedImage(mask, notice)
    return CheckedImage(on_white(image), notice)


def save_inputs(
    attachments: dict[str, bytes], folder: Path, data_dir: Path, max_bytes: int
) -> Inputs:
    """Check every attachment, then save each as `folder`/<role>.png.

    Nothing is written unless all of them pass. Paths in the result are relative
    to `data_dir`, as stored in a job's spec; its `notices` are sentences to
    show the member (an animated image reduced to its first frame).
    """
    checked = {role: read_image(data, role, max_bytes) for role, data in attachments.items()}
    return save_checked(checked, folder, data_dir)


def save_checked(checked: Mapping[str, CheckedImage], folder: Path, data_dir: Path) -> Inputs:
    """Save images already read (each role's), as `save_inputs` does."""
    if "image" in checked and "mask" in checked:
        _check_mask_shape(checked["image"].image.size, checked["mask"].image.size)
    folder.mkdir(parents=True, exist_ok=True)
    saved: dict[str, InputImage] = {}
    for role, found in checked.items():
        path = folder / f"{role}.png"
        found.image.save(path, format="PNG")
        saved[role] = InputImage(
            path.relative_to(data_dir).as_posix(), found.image.width, found.image.height
        )
    notices = tuple(found.notice for found in checked.values() if found.notice)
    return inputs_by_role(saved, notices)


def inputs_by_role(images: Mapping[str, InputImage], notices: tuple[str, ...] = ()) -> Inputs:
    """Inputs from images named by their roles (ROLES, REFERENCE_ROLES)."""
    return Inputs(
        image=images.get("image"),
        mask=images.get("mask"),
        control=images.get("control"),
        references=tuple(images[role] for role in REFERENCE_ROLES if role in images),
        notices=notices,
    )


def _sniff(data: bytes) -> str | None:
    """Pillow's name for the format of an accepted file, from its magic numbers."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    return None


def _kind_of(data: bytes) -> str:
    """What a refused file is, as far as its first bytes tell, in a member's words."""
    if not data.strip():
        return "empty"
    for signature, kind in _REFUSED_SIGNATURES:
        if data.startswith(signature):
            return f"{kind}, which I do not accept"
    if data[:2] == b"BM" and data[6:10] == b"\x00\x00\x00\x00":  # BMP reserved bytes
        return "a BMP image, which I do not accept"
    if data[:1] == b"P" and data[1:2] in b"1234567" and data[2:3].isspace():
        return "a PNM (PPM/PGM/PBM) image, which I do not accept"
    if data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"avif"):
        return "a HEIC/AVIF image, which I do not accept"
    if b"<svg" in data[:4096].lower():
        return "an SVG drawing, which I do not accept"
    if data.endswith(b"TRUEVISION-XFILE.\x00"):
        return "a TGA image, which I do not accept"
    return "not an image I can read"


def _header(data: bytes, image_format: str) -> _Header:
    """Size, channels and bit depth as the file's header declares them, without decoding
    any pixels.

    ValueError, IndexError, KeyError or struct.error when the header is cut short or
    malformed.
    """
    if image_format == "PNG":
        if data[12:16] != b"IHDR" or len(data) < 26:
            raise ValueError("no IHDR")
        width, height, bits, colour_type = struct.unpack(">IIBB", data[16:26])
        return _Header(int(width), int(height), _PNG_CHANNELS[colour_type], int(bits))
    if image_format == "GIF":
        if len(data) < 13:  # signature and the whole logical screen descriptor
            raise ValueError("no screen descriptor")
        width, height = struct.unpack("<HH", data[6:10])  # the logical screen
        return _Header(int(width), int(height), 1, 8)  # palette indices
    if image_format == "WEBP":
        return _Header(*_webp_size(data), _WEBP_CHANNELS, 8)
    return _jpeg_header(data)


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:  # extended: the canvas, stored minus one
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:  # lossless: 14 bits each
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + (bits >> 14 & 0x3FFF)
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":  # lossy
        return (
            int.from_bytes(data[26:28], "little") & 0x3FFF,
            int.from_bytes(data[28:30], "little") & 0x3FFF,
        )
    raise ValueError("no WebP frame header")


def _jpeg_header(data: bytes) -> _Header:
    """The first start-of-frame segment's size, components and sample precision, walking
    the segments before it."""
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            raise ValueError("not at a marker")
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte before a marker
            at += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            at += 2
        elif marker in (0xD9, 0xDA):  # end of image or scan data before any frame header
            break
        elif marker in _JPEG_FRAME_MARKERS:
            bits, height, width, components = struct.unpack(">BHHB", data[at + 4 : at + 10])
            return _Header(int(width), int(height), int(components), int(bits))
        else:
            at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    raise ValueError("no JPEG frame header")


def _check_size(role: str, width: int, height: int) -> None:
    if max(width, height) > MAX_INPUT_SIDE:
        raise BadInput(
            f"The `{role}` is {width}×{height} pixels; the limit is {MAX_INPUT_SIDE} pixels"
            f" a side ({MAX_INPUT_SIDE**2 / 1e6:.1f} MP)."
        )
    if min(width, height) < MIN_INPUT_SIDE:
        raise BadInput(
            f"The `{role}` is {width}×{height} pixels; each side must be at least"
            f" {MIN_INPUT_SIDE} pixels."
        )


def _check_decoded_bytes(role: str, header: _Header) -> None:
    """Refuse, before decoding, an image whose samples would pass MAX_DECODED_BYTES."""
    if header.decoded_bytes <= MAX_DECODED_BYTES:
        return
    scale = math.sqrt(MAX_DECODED_BYTES / header.decoded_bytes)
    width, height = math.floor(header.width * scale), math.floor(header.height * scale)
    raise BadInput(
        f"The `{role}` is a {header.bits}-bit {header.width}×{header.height} image, more than"
        f" I can read; save it with 8 bits per channel or at most {width}×{height} pixels."
    )


def to_eight_bits(image: Image.Image) -> Image.Image:
    """16-bit greyscale scaled to 8 bits (Pillow's own conversion clips it to white).

    16-bit colour PNGs already arrive as 8-bit RGB(A): Pillow keeps the high byte.
    """
    if image.mode not in _SIXTEEN_BIT_MODES:
        return image
    values = np.asarray(image)
    if values.dtype.itemsize > 2:  # mode I: 32-bit, of which 16-bit files use the low half
        values = np.clip(values, 0, 0xFFFF)
    return Image.fromarray(_EIGHT_BITS[values])


def on_white(image: Image.Image) -> Image.Image:
    """RGB, transparent parts laid on white as image viewers show them.

    White is painted in place on the RGB copy where the alpha channel says: an RGBA
    composite would hold three more full-size RGBA images at once.
    """
    if image.mode not in _ALPHA_MODES and "transparency" not in image.info:
        return image if image.mode == "RGB" else image.convert("RGB")
    if image.mode not in ("RGBA", "LA", "P"):  # PA, RGBa, La, a colour key on L or RGB
        image = image.convert("RGBA")
    # A palette image's RGBA copy is dropped before the RGB one is made.
    alpha = (image if image.mode != "P" else image.convert("RGBA")).getchannel("A")
    rgb = image.convert("RGB")
    rgb.paste("white", mask=ImageOps.invert(alpha))
    return rgb


def _as_mask(image: Image.Image) -> Image.Image:
    """A mode the engine reads as a mask, keeping any transparency as an alpha channel."""
    if image.mode in ("1", "L", "RGB", "RGBA", "LA") and "transparency" not in image.info:
        return image
    return image.convert("RGBA")


def _check_mask_paints_something(mask: Image.Image) -> None:
    """Refuse a mask that keeps everything or repaints everything, as the engine reads it."""
    levels = mask.convert("L")
    if mask.mode in ("RGBA", "LA"):  # transparent counts as black (keep): grey times alpha
        levels = ImageChops.multiply(levels, mask.getchannel("A"))
    darkest, lightest = cast(tuple[int, int], levels.getextrema())
    if lightest < _REPAINT_LEVEL:
        raise BadInput(
            "The `mask` has no white in it, so nothing would be repainted; paint white"
            " where the image should change and black where it should stay."
        )
    if darkest >= _REPAINT_LEVEL:
        raise BadInput(
            "The `mask` is white all over, so the whole image would be repainted; leave the"
            " mask out to change the whole image, or paint black what should stay."
        )


def _check_mask_shape(image: tuple[int, int], mask: tuple[int, int]) -> None:
    """A mask of the image's shape is resized to it later; another shape would distort it."""
    image_ratio, mask_ratio = image[0] / image[1], mask[0] / mask[1]
    if abs(mask_ratio - image_ratio) > MASK_ASPECT_TOLERANCE * image_ratio:
        raise BadInput(
            f"The `mask` is {mask[0]}×{mask[1]} pixels but the `image` is {image[0]}×{image[1]},"
            " another shape; make the mask from the image itself so both have the same shape."
        )


# A drawing is mostly paper and ink: this share of its pixels (at least) is near the
# lightest or darkest tone, with the lighter of the two covering most of the page.
_DRAWING_EXTREMES = 0.85
_DRAWING_SIDE = 128  # the image is read at about this size: enough for the tones
_INK_MARGIN = 48  # levels from black or white still counted as ink or paper
_PAPER_SHARE = 0.5
_GREY_CHROMA = 40  # a coloured pencil line is still a line; a photo's colour is not


def looks_like_drawing(path: Path) -> bool:
    """Whether a saved control image is a drawing (lines on a plain ground: scribble,
    lineart) rather than a photo (canny edges are taken from it).

    A drawing's pixels are nearly all paper or ink, and mostly paper (light lines on
    dark paper count too, as the engine inverts only dark-on-light); a photo spreads
    over the mid-tones. Runs on a small copy, so it costs milliseconds.
    """
    with Image.open(path) as opened:
        small = opened.convert("RGB")
    small.thumbnail((_DRAWING_SIDE, _DRAWING_SIDE))
    pixels = np.asarray(small, dtype=np.int16)
    grey = pixels.mean(axis=2)
    chroma = pixels.max(axis=2) - pixels.min(axis=2)
    light = grey >= 255 - _INK_MARGIN
    dark = grey <= _INK_MARGIN
    coloured_ink = (chroma >= _GREY_CHROMA) & ~light
    extremes = float((light | dark | coloured_ink).mean())
    paper = max(float(light.mean()), float(dark.mean()))
    return extremes >= _DRAWING_EXTREMES and paper >= _PAPER_SHARE
