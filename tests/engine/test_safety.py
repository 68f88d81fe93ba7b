"""The image classifier: NudeNet's real ONNX detector on real images, inside the engine."""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from nudenet import NudeDetector
from nudenet.nudenet import _read_image
from PIL import Image, ImageDraw
from transformers import CLIPConfig, CLIPImageProcessor

from engine.errors import InputFlagged
from engine.models import ModelRegistry
from engine.pipelines import generate
from engine.protocol import (
    EXPLICIT_LABELS,
    NUDENET_LABELS,
    ClassifierSettings,
    ControlType,
    JobResult,
    Mode,
    ModelSpec,
    NsfwPolicy,
)
from engine.safety import ImageClassifier, _blob
from engine.tiny import tiny_sd15_components

from .conftest import make_request, only_result

# A threshold every image reaches: every image is flagged.
FLAG_ALL = ClassifierSettings(threshold=0.0)


@pytest.fixture(scope="module")
def ordinary() -> ImageClassifier:
    return ImageClassifier(ClassifierSettings())


@pytest.fixture(scope="module")
def flag_all() -> ImageClassifier:
    return ImageClassifier(FLAG_ALL)


def plain_images() -> list[Image.Image]:
    """A grey card, and a landscape-ish drawing that is not square (padding is exercised)."""
    card = Image.new("RGB", (512, 512), (128, 128, 128))
    drawing = Image.new("RGB", (300, 180), (90, 160, 220))
    draw = ImageDraw.Draw(drawing)
    draw.rectangle((0, 120, 300, 180), fill=(60, 140, 60))
    draw.ellipse((200, 20, 250, 70), fill=(250, 220, 60))
    return [card, drawing]


def test_plain_images_pass_an_ordinary_threshold_with_a_score_per_counted_label(
    ordinary: ImageClassifier,
) -> None:
    verdicts = ordinary.classify(plain_images())
    for verdict in verdicts:
        assert not verdict.flagged
        assert set(verdict.scores) == set(EXPLICIT_LABELS)
        assert all(0.0 <= score < 0.2 for score in verdict.scores.values()), verdict


def test_a_threshold_of_zero_flags_every_image(flag_all: ImageClassifier) -> None:
    assert all(verdict.flagged for verdict in flag_all.classify(plain_images()))


def test_scores_come_from_nudenets_own_preprocessing_and_detections(
    ordinary: ImageClassifier, tmp_path: Path
) -> None:
    """Our input is the one NudeNet builds from the same image file, and its detector
    (which keeps boxes scoring 0.2 or more) finds nothing where every score is below 0.2."""
    for number, image in enumerate(plain_images()):
        path = tmp_path / f"{number}.png"
        image.save(path)
        theirs = _read_image(str(path), 320)[0]
        assert np.allclose(_blob(image), theirs, atol=1e-6)
        assert NudeDetector().detect(str(path)) == []
        every = ordinary.scores([image])[0]
        assert set(every) == set(NUDENET_LABELS)
        assert max(every.values()) < 0.2


def test_an_unknown_label_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown classifier label.*NUDITY.*FACE_FEMALE"):
        ClassifierSettings(labels=["NUDITY"])


def test_every_output_of_a_generation_carries_its_verdict(
    registry: ModelRegistry, tmp_path: Path, ordinary: ImageClassifier, flag_all: ImageClassifier
) -> None:
    request = make_request(tmp_path, count=2)
    plain = only_result(generate(request, registry, lambda *_: None, classifier=ordinary))
    assert [image.verdict is not None and not image.verdict.flagged for image in plain.images] == [
        True,
        True,
    ]
    flagged = only_result(generate(request, registry, lambda *_: None, classifier=flag_all))
    assert all(image.verdict is not None and image.verdict.flagged for image in flagged.images)
    # The same pixels either way: the classifier only reads the images.
    assert [i.sha256 for i in plain.images] == [i.sha256 for i in flagged.images]


def test_a_flagged_upload_stops_a_withholding_job_before_any_gpu_work(
    registry: ModelRegistry, tmp_path: Path, images: dict[str, Path], flag_all: ImageClassifier
) -> None:
    calls: list[int] = []
    request = make_request(
        tmp_path, mode=Mode.IMG2IMG, init_image=str(images["photo"]), strength=0.5
    )
    [outcome] = generate(request, registry, lambda *_: None, calls.append, classifier=flag_all)
    assert isinstance(outcome, InputFlagged)
    assert outcome.verdicts["init_image"].flagged
    assert calls == []  # no pipeline call was made
    # Where flagged images are allowed (or spoilered), the upload runs.
    for policy in (NsfwPolicy.ALLOW, NsfwPolicy.SPOILER):
        allowed = request.model_copy(
            update={"jobs": [request.jobs[0].model_copy(update={"nsfw_policy": policy})]}
        )
        result = only_result(generate(allowed, registry, lambda *_: None, classifier=flag_all))
        assert result.images[0].verdict is not None and result.images[0].verdict.flagged


def test_flagged_previews_are_shown_only_where_flagged_images_are_allowed(
    registry: ModelRegistry, tmp_path: Path, flag_all: ImageClassifier
) -> None:
    shown: dict[NsfwPolicy, list[str | None]] = {policy: [] for policy in NsfwPolicy}
    for policy in NsfwPolicy:
        request = make_request(tmp_path / policy, preview_every=1, nsfw_policy=policy)

        generate(request, registry, partial(_note_preview, shown[policy]), classifier=flag_all)
    assert shown[NsfwPolicy.BLOCK] == [None] * 4
    assert shown[NsfwPolicy.SPOILER] == [None] * 4
    assert all(shown[NsfwPolicy.ALLOW])


def _note_preview(
    previews: list[str | None], step: int, total: int, by_job: Mapping[str, str | None]
) -> None:
    previews.append(by_job["job1"])


def test_diffusers_safety_checker_is_never_loaded(tmp_path: Path) -> None:
    """An SD 1.x checkpoint that ships diffusers' safety checker (as SD 1.5 does) loads
    without it: it would blacken flagged images silently."""
    clip = {
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
    }
    config = CLIPConfig(
        text_config=clip,
        vision_config=clip | {"image_size": 32, "patch_size": 4},
        projection_dim=32,
    )
    components = tiny_sd15_components() | {
        "safety_checker": StableDiffusionSafetyChecker(config),
        "feature_extractor": CLIPImageProcessor(crop_size=32, size=32),
        "requires_safety_checker": True,
    }
    folder = tmp_path / "with-checker"
    StableDiffusionPipeline(**components).save_pretrained(folder, safe_serialization=True)
    assert (folder / "safety_checker").is_dir()

    registry = ModelRegistry({"checked": ModelSpec(source=str(folder))}, torch.device("cpu"))
    model = registry.get("checked")
    assert model.pipeline.safety_checker is None
    for mode in (Mode.IMG2IMG, Mode.INPAINT):
        assert model.pipeline_for(mode, ControlType.CANNY).safety_checker is None


def test_classifying_takes_a_fraction_of_a_denoising_step(
    registry: ModelRegistry, tmp_path: Path, ordinary: ImageClassifier
) -> None:
    """The measurement the README quotes: classifier time per image against the time of
    one denoising step, in one run (tiny model, 64x64, on this CPU)."""
    request = make_request(tmp_path, steps=8)
    generate(request, registry, lambda *_: None, classifier=ordinary)  # warm
    started, before = time.perf_counter(), ordinary.seconds
    result = only_result(generate(request, registry, lambda *_: None, classifier=ordinary))
    total = time.perf_counter() - started
    per_image = ordinary.seconds - before
    per_step = (total - per_image) / request.steps
    print(
        f"classifier {per_image * 1000:.1f} ms/image, step {per_step * 1000:.1f} ms,"
        f" ratio {per_image / per_step:.2f}"
    )
    assert isinstance(result, JobResult)
    assert per_image < 1.0
