"""Attached images: checked before anything is queued, then saved as plain PNG files.

The same checks serve /imagine attachments and `atelier generate --image`. An
image that fails any of them becomes a BadInput the member can act on.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from .spec import BadInput, InputImage, Inputs

# Larger inputs are refused rather than decoded: a small file can expand to
# gigabytes of pixels (a "decompression bomb").
MAX_INPUT_SIDE = 4096
MIN_INPUT_SIDE = 16
ROLES = ("image", "mask", "control")


def read_image(data: bytes, role: str, max_bytes: int) -> Image.Image:
    """Decode one attachment, upright (EXIF orientation applied), or raise BadInput."""
    if len(data) > max_bytes:
        raise BadInput(
            f"The `{role}` attachment is {len(data) / 2**20:.1f} MB;"
            f" the limit is {max_bytes / 2**20:g} MB."
        )
    unreadable = BadInput(f"The `{role}` attachment is not an image I can read (PNG, JPEG, WebP).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if max(width, height) > MAX_INPUT_SIDE or min(width, height) < MIN_INPUT_SIDE:
                raise BadInput(
                    f"The `{role}` image is {width}×{height}; each side must be"
                    f" {MIN_INPUT_SIDE}-{MAX_INPUT_SIDE} pixels."
                )
            image.load()
    except BadInput:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError,
            ValueError, Warning):  # fmt: skip
        raise unreadable from None
    return ImageOps.exif_transpose(image)


def save_inputs(
    attachments: dict[str, bytes], folder: Path, data_dir: Path, max_bytes: int
) -> Inputs:
    """Check every attachment, then save each as `folder`/<role>.png.

    Nothing is written unless all of them pass. Paths in the result are relative
    to `data_dir`, as stored in a job's spec.
    """
    images = {role: read_image(data, role, max_bytes) for role, data in attachments.items()}
    folder.mkdir(parents=True, exist_ok=True)
    saved: dict[str, InputImage] = {}
    for role, image in images.items():
        # A mask keeps its own channels (the engine reduces them); the others become RGB.
        if role != "mask":
            image = image.convert("RGB")
        elif image.mode not in ("1", "L", "RGB", "RGBA", "LA"):
            image = image.convert("RGBA")
        path = folder / f"{role}.png"
        image.save(path, format="PNG")
        saved[role] = InputImage(str(path.relative_to(data_dir)), image.width, image.height)
    return Inputs(image=saved.get("image"), mask=saved.get("mask"), control=saved.get("control"))
