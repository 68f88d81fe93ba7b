"""The image classifier: NudeNet's pretrained 320n detector, run offline on onnxruntime.

The `nudenet` wheel ships the ONNX file (12 MB), so nothing is downloaded, at
run time or in tests. The detector is a YOLOv8 model: for each of about 2100
candidate boxes it gives a probability per label (engine.protocol
NUDENET_LABELS). An image's score for a label is the highest of those over
all boxes, so every image gets a score (0 for nothing of the kind), not only
the boxes that pass a cut-off; it is flagged when one of the counted labels
scores at least the threshold. Preprocessing is NudeNet's own, as its
`NudeDetector.detect` prepares an image file: padded to a square at its bottom
and right, resized to 320x320, channels in [0, 1] and in the order NudeNet
feeds them (blue, green, red: its reader swaps the channels twice over).

This replaces diffusers' built-in safety checker, which engine.checkpoints
never loads: that one blackens flagged images silently, this one says so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from engine.errors import BadRequest
from engine.protocol import NUDENET_LABELS, ClassifierSettings, ImageVerdict

log = logging.getLogger(__name__)

INPUT_SIDE = 320
# Scores are kept to this many decimals: enough to compare with a threshold, short in logs.
SCORE_DECIMALS = 4


def nudenet_model() -> Path:
    """The ONNX file inside the installed nudenet package."""
    return Path(str(resources.files("nudenet").joinpath("320n.onnx")))


class ImageClassifier:
    """Scores images against the counted labels; one onnxruntime session, loaded once."""

    def __init__(self, settings: ClassifierSettings, model: Path | None = None) -> None:
        try:
            import onnxruntime

            path = model or nudenet_model()
        except ImportError as error:
            raise BadRequest(
                f"the image classifier needs the nudenet and onnxruntime packages ({error});"
                " `pip install nudenet onnxruntime`, or set [moderation] classify_images = false"
            ) from None
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # warnings about unused initialisers are noise
        self._session: Any = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        self.settings = settings
        self._columns = [NUDENET_LABELS.index(label) for label in settings.labels]
        # Time spent classifying, for the log and the measurements (README, Moderation).
        self.seconds = 0.0
        self.images = 0

    def scores(self, images: Sequence[Image.Image]) -> list[dict[str, float]]:
        """Each image's score for every label NudeNet knows (one model run for them all)."""
        if not images:
            return []
        started = time.perf_counter()
        batch = np.concatenate([_blob(image) for image in images])
        (output,) = self._session.run(None, {self._input: batch})
        # (images, 4 box coordinates + one column per label, boxes): best box per label.
        best = np.asarray(output)[:, 4:, :].max(axis=2)
        self.seconds += time.perf_counter() - started
        self.images += len(images)
        return [
            {label: round(float(row[i]), SCORE_DECIMALS) for i, label in enumerate(NUDENET_LABELS)}
            for row in best
        ]

    def classify(self, images: Sequence[Image.Image]) -> list[ImageVerdict]:
        """Each image's verdict: the counted labels' scores, flagged at the threshold."""
        verdicts = []
        for every in self.scores(images):
            counted = {label: every[label] for label in self.settings.labels}
            flagged = any(score >= self.settings.threshold for score in counted.values())
            verdicts.append(ImageVerdict(flagged=flagged, scores=counted))
        return verdicts

    def classify_file(self, path: str | Path) -> ImageVerdict:
        with Image.open(path) as image:
            image.load()
            (verdict,) = self.classify([image])
        return verdict


def load_classifier(settings: ClassifierSettings) -> ImageClassifier | None:
    """The engine's classifier, or None when `[moderation] classify_images` is off."""
    if not settings.enabled:
        log.warning("the image classifier is off: no image is checked")
        return None
    started = time.perf_counter()
    classifier = ImageClassifier(settings)
    log.info(
        "image classifier loaded in %.2f s (threshold %g on %s)",
        time.perf_counter() - started,
        settings.threshold,
        ", ".join(settings.labels),
    )
    return classifier


def _blob(image: Image.Image) -> np.ndarray[Any, np.dtype[np.float32]]:
    """One image as the detector's input: (1, 3, 320, 320) float32, as NudeNet prepares it."""
    bgr = np.asarray(image.convert("RGB"))[:, :, ::-1]
    height, width = bgr.shape[:2]
    side = max(height, width)
    square = np.zeros((side, side, 3), dtype=np.uint8)
    square[:height, :width] = bgr
    resized = cv2.resize(square, (INPUT_SIDE, INPUT_SIDE), interpolation=cv2.INTER_LINEAR)
    return (resized.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
