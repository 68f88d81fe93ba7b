"""Zoom Out, Make Square and Pan: the registry's outpainting transforms (pure, no I/O)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import GenerationConfig
from bot.core.actions import BY_NAME, ActionName, Source, Tweak, Words, buttons_for
from bot.jobs.spec import BadInput, InputImage, JobSpec, Options, build_spec, derived_spec
from bot.store.models import JobState
from engine.protocol import Frame, Mode, ModelSpec

MODELS = {"sd15": ModelSpec(source="x", width=512, height=512, steps=30, cfg=7.0)}
STRENGTH = GenerationConfig().outpaint_strength


def source_of(width: int = 512, height: int = 512, steps: int = 30) -> Source:
    spec = build_spec(Options(prompt="a lighthouse", seed=3, steps=steps), MODELS, "sd15")
    return Source(
        job_id="j",
        spec=spec,
        number=1,
        image=InputImage("images/j/j-1.png", width, height),
        image_seed=3,
    )


def act(name: ActionName, source: Source, models: dict[str, ModelSpec] = MODELS) -> JobSpec:
    action = BY_NAME[name]
    assert action.transform is not None
    strength = action.strength_in(GenerationConfig())
    return action.transform(source, Tweak(strength=strength, words=None, models=models, styles={}))


@pytest.mark.parametrize(
    ("name", "size", "canvas", "frame"),
    [
        # The picture at half (two thirds) of the canvas's sides, in its middle.
        (ActionName.ZOOM_OUT_2, (512, 512), (512, 512), (128, 128, 256, 256)),
        (ActionName.ZOOM_OUT_15, (512, 512), (512, 512), (85, 85, 341, 341)),
        # A 3:2 canvas fitted to the model's 512x512 area, the picture at its right.
        (ActionName.PAN_LEFT, (512, 512), (624, 416), (208, 0, 416, 416)),
        (ActionName.PAN_RIGHT, (512, 512), (624, 416), (0, 0, 416, 416)),
        (ActionName.PAN_UP, (512, 512), (416, 624), (0, 208, 416, 416)),
        (ActionName.PAN_DOWN, (512, 512), (416, 624), (0, 0, 416, 416)),
        # Short sides grown evenly; the upscaled 1024x768 shrinks to the model's area.
        (ActionName.MAKE_SQUARE, (512, 384), (512, 512), (0, 64, 512, 384)),
        (ActionName.MAKE_SQUARE, (768, 1024), (512, 512), (64, 0, 384, 512)),
        (ActionName.ZOOM_OUT_2, (1024, 768), (592, 440), (148, 110, 296, 220)),
    ],
)
def test_each_outpainting_action_places_the_picture_on_its_canvas(
    name: ActionName,
    size: tuple[int, int],
    canvas: tuple[int, int],
    frame: tuple[int, int, int, int],
) -> None:
    source = source_of(*size)
    made = act(name, source)
    assert (made.mode, made.width, made.height) == (Mode.OUTPAINT, *canvas)
    left, top, width, height = frame
    assert made.frame == Frame(left=left, top=top, width=width, height=height)
    assert (made.init_image, made.mask_image, made.count) == ("images/j/j-1.png", None, 1)
    assert (made.source_job, made.source_image) == ("j", 1)
    assert (made.strength, made.prompt, made.steps) == (STRENGTH, "a lighthouse", 30)
    # Each click paints another border: a new seed, never the source's.
    assert made.seed != source.spec.seed
    assert act(name, source).seed != made.seed
    # The engine takes it as it is (the frame is inside the canvas and leaves a border).
    request = made.to_request("k", Path("/data/images/k"), Path("/data"))
    assert request.jobs[0].frame == made.frame
    assert request.jobs[0].init_image == "/data/images/j/j-1.png"


def test_the_strength_is_the_configured_one_and_gets_a_denoising_step() -> None:
    config = GenerationConfig(outpaint_strength=0.4)
    action = BY_NAME[ActionName.PAN_LEFT]
    strength = action.strength_in(config)
    assert strength == 0.4
    assert action.transform is not None
    tweak = Tweak(strength=strength, words=None, models=MODELS, styles={})
    made = action.transform(source_of(steps=2), tweak)
    assert (made.strength, made.steps) == (0.4, 3)


def test_a_square_image_is_not_made_square_again() -> None:
    with pytest.raises(BadInput, match="already square"):
        act(ActionName.MAKE_SQUARE, source_of(512, 512))


def test_a_pan_beyond_four_to_one_is_refused() -> None:
    with pytest.raises(BadInput, match="ratios go from 1:4 to 4:1"):
        act(ActionName.PAN_RIGHT, source_of(1024, 256))
    assert act(ActionName.PAN_UP, source_of(1024, 256)).frame is not None


def test_an_outpainting_needs_its_model_configured() -> None:
    with pytest.raises(BadInput, match="`sd15` is no longer available"):
        act(ActionName.ZOOM_OUT_2, source_of(), models={})


def test_a_variation_of_an_outpainted_image_leaves_the_frame_behind() -> None:
    zoomed = act(ActionName.ZOOM_OUT_2, source_of())
    image = InputImage("images/k/k-1.png", zoomed.width, zoomed.height)
    varied = derived_spec(zoomed, ("k", 1), image, Mode.VARIATION, 0.6, 9)
    assert (varied.mode, varied.frame) == (Mode.VARIATION, None)
    varied.to_request("v", Path("/data/images/v"), Path("/data"))
    # A zoom of the zoomed image places it again, on a canvas of its own.
    again = act(ActionName.ZOOM_OUT_2, Source(job_id="k", spec=zoomed, number=1, image=image))
    assert again.frame == Frame(left=128, top=128, width=256, height=256)


def test_the_buttons_fit_discords_five_rows_of_five_under_a_single_image() -> None:
    for images in (1, 4):
        rows: dict[int, int] = {}
        for action, _ in buttons_for(JobState.SUCCEEDED, images):
            assert action.button is not None
            row = action.button.row or 0
            rows[row] = rows.get(row, 0) + 1
        assert set(rows) <= set(range(5)) and max(rows.values()) <= 5
    single = {action.name for action, _ in buttons_for(JobState.SUCCEEDED, 1)}
    grid = {action.name for action, _ in buttons_for(JobState.SUCCEEDED, 4)}
    outpainting = {ActionName.ZOOM_OUT_2, ActionName.ZOOM_OUT_15, ActionName.MAKE_SQUARE}
    outpainting |= {ActionName.PAN_LEFT, ActionName.PAN_RIGHT, ActionName.PAN_UP}
    outpainting.add(ActionName.PAN_DOWN)
    assert outpainting <= single and not outpainting & grid


@pytest.mark.parametrize("zoom", [None, 1.0, 2.5])
def test_custom_zoom_takes_a_factor_from_1_05_to_2(zoom: float | None) -> None:
    action = BY_NAME[ActionName.CUSTOM_ZOOM]
    assert action.transform is not None and action.takes_words and action.takes_zoom
    words = Words(prompt="a lighthouse at dawn", zoom=zoom)
    tweak = Tweak(strength=STRENGTH, words=words, models=MODELS, styles={})
    with pytest.raises(BadInput, match=r"Custom Zoom needs a factor from 1\.05 to 2"):
        action.transform(source_of(), tweak)


def test_custom_zoom_zooms_out_by_the_factor_with_the_new_words() -> None:
    action = BY_NAME[ActionName.CUSTOM_ZOOM]
    assert action.transform is not None
    words = Words(prompt="a lighthouse at dawn --steps 20", negative="fog", zoom=1.5)
    tweak = Tweak(strength=STRENGTH, words=words, models=MODELS, styles={})
    spec = action.transform(source_of(), tweak)
    # As Zoom Out 1.5x, with the remix's words and flags.
    as_fixed = act(ActionName.ZOOM_OUT_15, source_of())
    assert (spec.mode, spec.width, spec.height, spec.frame) == (
        Mode.OUTPAINT,
        as_fixed.width,
        as_fixed.height,
        as_fixed.frame,
    )
    assert (spec.prompt, spec.negative_prompt, spec.steps) == ("a lighthouse at dawn", "fog", 20)
    assert spec.strength == STRENGTH and (spec.source_job, spec.source_image) == ("j", 1)
