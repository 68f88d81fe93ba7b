"""The rules at the door: options, prompt flags, sizes; pure functions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.jobs.spec import (
    ASPECTS,
    MAX_PROMPT_CHARS,
    BadInput,
    InputImage,
    Inputs,
    JobSpec,
    Options,
    blocked_term,
    build_spec,
    clean_text,
    derived_spec,
    fit_aspect,
    parse_prompt_flags,
    remixed_spec,
    rerolled_spec,
)
from engine.protocol import MAX_SIDE, ControlType, GenerateRequest, Mode, ModelSpec, batch_key

MODELS = {"sd15": ModelSpec(source="x", width=512, height=512, steps=30, cfg=7.0)}


def spec_for(**options: object):  # type: ignore[no-untyped-def]
    return build_spec(Options(**options), MODELS, "sd15")  # type: ignore[arg-type]


def test_defaults_come_from_the_model() -> None:
    spec = spec_for(prompt="a lighthouse", seed=5)
    assert (spec.width, spec.height, spec.steps, spec.cfg, spec.count) == (512, 512, 30, 7.0, 1)
    assert spec.sampler == "DPM++ 2M Karras"


def test_seeds_of_a_batch_are_consecutive() -> None:
    assert spec_for(prompt="x", seed=41, count=3).seeds == [41, 42, 43]


def test_a_random_seed_is_chosen_when_none_is_given() -> None:
    seeds = {spec_for(prompt="x").seed for _ in range(5)}
    assert len(seeds) > 1


@pytest.mark.parametrize("aspect", ASPECTS)
def test_every_aspect_keeps_about_the_native_area(aspect: str) -> None:
    width, height = fit_aspect(aspect, 512, 512)
    assert width % 8 == 0 and height % 8 == 0
    assert abs(width * height / (512 * 512) - 1) < 0.05
    ratio_w, ratio_h = (int(p) for p in aspect.split(":"))
    assert abs(width / height - ratio_w / ratio_h) < 0.05


def test_prompt_flags_are_read_and_removed() -> None:
    spec = spec_for(prompt="a red fox --ar 16:9 --seed 42 --no text, watermark")
    assert spec.prompt == "a red fox"
    assert spec.negative_prompt == "text, watermark"
    assert (spec.width, spec.height, spec.seed) == (680, 384, 42)


def test_explicit_options_win_over_prompt_flags() -> None:
    assert spec_for(prompt="a fox --seed 42", seed=7).seed == 7


def test_far_too_long_prompt_is_refused_with_the_limit() -> None:
    with pytest.raises(BadInput, match=f"limit is {MAX_PROMPT_CHARS:,}"):
        spec_for(prompt="cat " * 25_000)


def test_control_and_zero_width_characters_are_removed() -> None:
    assert clean_text("a\x00 c\u200bat\n\tsits\x7f") == "a cat sits"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prompt": "   "}, "prompt is empty"),
        ({"prompt": "\u200b\u200b"}, "prompt is empty"),
        ({"prompt": "x", "model": "nope"}, "Unknown model `nope`; available: sd15"),
        # Any ratio from 1:4 to 4:1 is fitted now, not only the offered choices.
        ({"prompt": "x", "aspect": "5:1"}, "Aspect `5:1` is out of range; ratios go from 1:4"),
        ({"prompt": "x", "aspect": "wide"}, "Aspect `wide` is not a ratio"),
        ({"prompt": "x", "count": 9}, "`count` must be between 1 and 4"),
        ({"prompt": "x", "steps": 0}, "`steps` must be between 1 and 150"),
        ({"prompt": "x", "cfg": 99.0}, "`cfg` must be between 0 and 30"),
        ({"prompt": "x --seed many"}, "`--seed` needs a number"),
    ],
)
def test_bad_options_say_what_to_change(options: dict[str, object], message: str) -> None:
    with pytest.raises(BadInput, match=None) as raised:
        spec_for(**options)
    assert message in str(raised.value)


def test_flags_alone_parse_without_a_spec() -> None:
    options = parse_prompt_flags("castle --steps 12 --cfg 4.5")
    assert (options.prompt, options.steps, options.cfg) == ("castle", 12, 4.5)


CONTROLLED = {
    **MODELS,
    "sketchy": ModelSpec(source="y", controlnets={ControlType.SCRIBBLE: "z"}),
}


def inputs(**roles: tuple[int, int]) -> Inputs:
    return Inputs(
        **{role: InputImage(f"inputs/x/{role}.png", *size) for role, size in roles.items()}
    )


def test_attachments_choose_the_mode() -> None:
    def mode(found: Inputs, **options: object) -> Mode:
        return build_spec(Options(prompt="x", **options), CONTROLLED, "sd15", found).mode  # type: ignore[arg-type]

    assert mode(Inputs()) is Mode.TXT2IMG
    assert mode(inputs(image=(64, 64))) is Mode.IMG2IMG
    assert mode(inputs(image=(64, 64), mask=(32, 32))) is Mode.INPAINT
    assert mode(inputs(control=(64, 64)), model="sketchy", control_type="scribble") is (
        Mode.CONTROLNET
    )


def test_an_input_image_sets_the_shape_at_the_models_area() -> None:
    spec = build_spec(Options(prompt="x"), MODELS, "sd15", inputs(image=(1600, 900)))
    assert abs(spec.width / spec.height - 16 / 9) < 0.05
    assert abs(spec.width * spec.height / 512**2 - 1) < 0.05
    assert spec.init_image == "inputs/x/image.png" and spec.strength == 0.75


def test_inpainting_repaints_fully_unless_told() -> None:
    found = inputs(image=(64, 64), mask=(64, 64))
    assert build_spec(Options(prompt="x"), MODELS, "sd15", found).strength == 1.0
    assert build_spec(Options(prompt="x", strength=0.4), MODELS, "sd15", found).strength == 0.4


@pytest.mark.parametrize(
    ("found", "options", "message"),
    [
        (inputs(mask=(64, 64)), {}, "needs the `image`"),
        (inputs(image=(64, 64), control=(64, 64)), {}, "not both"),
        (
            inputs(control=(64, 64)),
            {},
            "Model `sd15` has no `canny` ControlNet configured; no model",
        ),
        (
            inputs(control=(64, 64)),
            {"control_type": "scribble"},
            "has no `scribble` ControlNet configured; models that have one: sketchy",
        ),
        (inputs(image=(64, 64)), {"strength": 0.01}, "`strength` must be between 0.05 and 1"),
        (
            Inputs(),
            {"sampler": "Euler b"},
            "Unknown sampler `Euler b`; choose one of: Euler, Euler a",
        ),
    ],
)
def test_impossible_modes_are_refused_with_what_would_work(
    found: Inputs, options: dict[str, object], message: str
) -> None:
    with pytest.raises(BadInput) as raised:
        build_spec(Options(prompt="x", **options), CONTROLLED, "sd15", found)  # type: ignore[arg-type]
    assert message in str(raised.value)


def test_sampler_names_are_matched_ignoring_case() -> None:
    assert spec_for(prompt="x", sampler="dpm++ 2m karras").sampler == "DPM++ 2M Karras"


def test_upscale_doubles_each_side_and_variation_keeps_the_size() -> None:
    original = spec_for(prompt="a fox", seed=3, count=4)
    image = InputImage("images/j/j-2.png", 512, 384)
    up = derived_spec(original, ("j", 2), image, Mode.UPSCALE, 0.3, 4)
    assert (up.width, up.height, up.count, up.seed, up.strength) == (1024, 768, 1, 4, 0.3)
    assert (up.mode, up.init_image, up.source_job, up.source_image) == (
        Mode.UPSCALE,
        "images/j/j-2.png",
        "j",
        2,
    )
    variation = derived_spec(original, ("j", 2), image, Mode.VARIATION, 0.6, 99)
    assert (variation.width, variation.height, variation.seed) == (512, 384, 99)
    assert variation.prompt == "a fox"


def test_an_image_job_needs_a_denoising_step() -> None:
    """int(steps x strength) steps run: none is refused before queueing (the engine would
    fail the job after the member was charged), and a derived job of a few-step result gets
    the steps its strength needs."""
    with pytest.raises(BadInput) as raised:
        build_spec(
            Options(prompt="x", steps=2, strength=0.3), MODELS, "sd15", inputs(image=(64, 64))
        )
    assert "use at least 4 steps or a higher strength" in str(raised.value)
    assert (
        build_spec(
            Options(prompt="x", steps=4, strength=0.3), MODELS, "sd15", inputs(image=(64, 64))
        ).steps
        == 4
    )
    few = spec_for(prompt="a fox", steps=2)
    image = InputImage("images/j/j-1.png", 64, 64)
    up = derived_spec(few, ("j", 1), image, Mode.UPSCALE, 0.3, 4)
    assert int(up.steps * up.strength) >= 1 and up.steps == 4
    assert derived_spec(few, ("j", 1), image, Mode.VARIATION, 0.6, 4).steps == 2
    with pytest.raises(BadInput):
        remixed_spec(up, "a fox --steps 2", "", MODELS)


def test_upscale_stays_within_the_largest_side() -> None:
    original = spec_for(prompt="x")
    big = derived_spec(original, ("j", 1), InputImage("p", 1536, 1024), Mode.UPSCALE, 0.3, 1)
    assert big.width <= MAX_SIDE and big.height <= MAX_SIDE
    assert abs(big.width / big.height - 1.5) < 0.02


def test_request_paths_are_absolute_under_the_data_dir(tmp_path: Path) -> None:
    spec = build_spec(Options(prompt="x", seed=1), MODELS, "sd15", inputs(image=(64, 64)))
    request = spec.to_request("j1", tmp_path / "images/j1", tmp_path, preview_every=3)
    assert request.jobs[0].init_image == str(tmp_path / "inputs/x/image.png")
    assert (request.mode, request.preview_every) == (Mode.IMG2IMG, 3)


def test_jobs_batch_by_their_shared_settings_not_their_prompts_or_seeds(
    tmp_path: Path,
) -> None:
    fox = build_spec(Options(prompt="a fox", seed=1), MODELS, "sd15")
    owl = build_spec(Options(prompt="an owl", negative_prompt="x", seed=9, count=2), MODELS, "sd15")
    slower = build_spec(Options(prompt="a fox", seed=1, steps=40), MODELS, "sd15")
    assert batch_key(fox.shared_params()) == batch_key(owl.shared_params())
    assert batch_key(fox.shared_params()) != batch_key(slower.shared_params())

    jobs = [
        spec.batch_job(job_id, tmp_path / "images" / job_id, tmp_path)
        for job_id, spec in (("j1", fox), ("j2", owl))
    ]
    request = GenerateRequest.for_jobs("b1", batch_key(fox.shared_params()), jobs, 3)
    assert (request.job_ids, request.images, request.preview_every) == (["j1", "j2"], 3, 3)
    assert (request.jobs[1].prompt, request.jobs[1].seed) == ("an owl", 9)
    assert request.jobs[1].output_dir == str(tmp_path / "images/j2")


def test_personal_defaults_fill_only_what_the_member_left_out() -> None:
    personal = {"steps": 12, "aspect": "16:9", "negative_prompt": "blur", "unknown": 1}
    spec = build_spec(
        Options(prompt="a fox --no text", steps=20), MODELS, "sd15", personal=personal
    )
    assert (spec.steps, spec.negative_prompt) == (20, "text")  # given, then prompt flags
    assert spec.width > spec.height  # the member's own 16:9


@pytest.mark.parametrize("text", ["a {go,}re scene", "a {calm, gor{e, y}} scene", "{gore} x"])
def test_blocked_terms_are_found_in_every_prompt_the_choices_make(text: str) -> None:
    assert blocked_term(text, ["gore", "gory"]) in ("gore", "gory")


def test_a_remix_keeps_the_seeds_and_takes_the_new_words() -> None:
    original = spec_for(prompt="a fox", negative_prompt="blur", seed=9, count=2)
    remixed = remixed_spec(original, "a wolf --cfg 4 --ar 16:9", "fog", MODELS)
    assert (remixed.prompt, remixed.negative_prompt, remixed.seeds) == ("a wolf", "fog", [9, 10])
    assert remixed.cfg == 4 and (remixed.width, remixed.height) == fit_aspect("16:9", 512, 512)
    assert remixed_spec(original, "a wolf --no rain", "fog", MODELS).negative_prompt == "rain"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a {red, blue} wolf", "A remix makes one job: remove the {…} choices."),
        ("a wolf --n 2", "A remix makes one job: remove `--n`."),
        ("a wolf --bogus", "Unknown flag `--bogus`"),
        ("--seed 3", "The prompt is empty"),
        ("a wolf --model sdxl", "Unknown model `sdxl`"),
    ],
)
def test_a_remix_is_refused_with_what_to_change(text: str, message: str) -> None:
    with pytest.raises(BadInput, match=re.escape(message)):
        remixed_spec(spec_for(prompt="a fox"), text, "", MODELS)


def test_a_remix_of_an_image_job_keeps_its_shape() -> None:
    inputs = Inputs(image=InputImage("in.png", 640, 320))
    original = build_spec(Options(prompt="a fox"), MODELS, "sd15", inputs)
    with pytest.raises(BadInput, match="its shape is kept"):
        remixed_spec(original, "a wolf --ar 1:1", "", MODELS)
    assert remixed_spec(original, "a wolf", "", MODELS).init_image == "in.png"


def test_a_spec_stored_before_tile_existed_loads_untiled() -> None:
    stored = spec_for(prompt="a fox", seed=1).model_dump(mode="json")
    del stored["tile"]
    assert JobSpec.model_validate(stored).tile is False


def test_jobs_made_from_a_tiled_job_stay_tiled_and_a_remix_may_tile() -> None:
    tiled = spec_for(prompt="bricks --tile", seed=1)
    image = InputImage("images/j/j-1.png", 512, 512)
    assert derived_spec(tiled, ("j", 1), image, Mode.UPSCALE, 0.3, 4).tile is True
    assert remixed_spec(tiled, "stones", "", MODELS).tile is True
    assert remixed_spec(spec_for(prompt="bricks"), "stones --tile", "", MODELS).tile is True


def test_a_reroll_changes_only_the_seed() -> None:
    original = spec_for(prompt="a fox", seed=1)
    assert rerolled_spec(original, 5) == original.model_copy(update={"seed": 5})
