"""Input images made ready for a pipeline: read, reduced to what the mode needs, sized to the job.

The bot has already checked each file (format, size, not a bomb); the engine
re-reads it defensively and always works at the request's width x height.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from engine.errors import BadRequest
from engine.protocol import ControlType

# OpenCV's customary Canny thresholds for 8-bit photos (as in the ControlNet annotators).
CANNY_LOW, CANNY_HIGH = 100, 200
# A drawing whose mean level is above mid-grey is dark lines on a light ground.
_LIGHT_GROUND = 127


def file_sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _open(path: str, role: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            # The first frame only, with EXIF rotation applied, as viewers show it.
            return ImageOps.exif_transpose(image)
    except (OSError, ValueError) as error:
        raise BadRequest(f"the {role} could not be read: {error}") from error


def init_image(path: str, width: int, height: int) -> Image.Image:
    """The starting image, RGB, resized to the job's size."""
    image = _open(path, "image").convert("RGB")
    return image.resize((width, height), Image.Resampling.LANCZOS)


def mask_image(path: str, width: int, height: int) -> Image.Image:
    """One-channel mask at the job's size: white = repaint, black = keep.

    Transparent pixels count as black, so white paint on a transparent layer
    repaints only what was painted.
    """
    image = _open(path, "mask")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        ground = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(ground, rgba)
    return image.convert("L").resize((width, height), Image.Resampling.BILINEAR)


def control_image(path: str, control_type: ControlType, width: int, height: int) -> Image.Image:
    """The control map a ControlNet of `control_type` expects: RGB, light marks on black."""
    image = _open(path, "control image").convert("RGB")
    image = image.resize((width, height), Image.Resampling.LANCZOS)
    if control_type is ControlType.NONE:
        return image
    grey = np.asarray(image.convert("L"))
    if control_type is ControlType.CANNY:
        marks = cv2.Canny(grey, CANNY_LOW, CANNY_HIGH)
    else:
        marks = 255 - grey if grey.mean() > _LIGHT_GROUND else grey
    return Image.fromarray(np.ascontiguousarray(marks, dtype=np.uint8)).convert("RGB")
