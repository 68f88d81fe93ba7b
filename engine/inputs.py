"""Input images made ready for a pipeline: read, reduced to what the mode needs, sized to the job.

The bot has already checked each file (format, size, not a bomb); the engine
re-reads it defensively and always works at the request's width x height.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from engine.errors import BadRequest
from engine.protocol import ControlType, Frame

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


@dataclass(frozen=True)
class Canvas:
    """An outpainting job's start: the picture on its larger canvas and what to paint."""

    # The picture at its frame; the border around it filled with the picture's edge
    # colours, smoothed, so a strength below 1 starts the border from plausible colours.
    image: Image.Image
    # One channel: white where the border is painted, black over the picture, blurred
    # across the seams so the painted border blends into the picture's edge.
    mask: Image.Image


def seam_blur(width: int, height: int) -> int:
    """The Gaussian sigma, in pixels, of an outpainting mask's seams on a canvas of
    `width` x `height` (the diffusers outpainting guide blurs a 1024 canvas by ~20)."""
    return max(2, round(min(width, height) / 48))


def outpaint_canvas(picture: Image.Image, width: int, height: int, frame: Frame) -> Canvas:
    """`picture` (RGB, already `frame`'s size) placed at `frame` on a `width` x `height`
    canvas, its border filled and masked for painting."""
    if picture.size != (frame.width, frame.height):
        raise ValueError(f"the picture is {picture.size}, its frame {frame.describe()}")
    right = width - frame.left - frame.width
    bottom = height - frame.top - frame.height
    placed = np.asarray(picture.convert("RGB"))
    # Each edge's colours carried outward, then blurred into soft colour fields (the
    # replicated rows alone are hard streaks).
    filled = cv2.copyMakeBorder(placed, frame.top, bottom, frame.left, right, cv2.BORDER_REPLICATE)
    smoothing = max(1.0, min(frame.width, frame.height) / 8)
    filled = cv2.GaussianBlur(filled, (0, 0), sigmaX=smoothing)
    inside = np.s_[frame.top : frame.top + frame.height, frame.left : frame.left + frame.width]
    filled[inside] = placed
    sharp = np.full((height, width), 255, dtype=np.uint8)
    sharp[inside] = 0
    mask = cv2.GaussianBlur(sharp, (0, 0), sigmaX=seam_blur(width, height))
    return Canvas(Image.fromarray(filled), Image.fromarray(mask))


def blend_seams(painted: Image.Image, canvas: Canvas) -> Image.Image:
    """The painted image with the picture put back where the mask keeps it: the picture's
    own pixels inside (not their trip through the VAE), the paint outside, mixed by the
    blurred mask across the seams."""
    return Image.composite(painted.convert("RGB"), canvas.image, canvas.mask)
