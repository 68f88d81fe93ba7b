"""The rules at the door: options, prompt flags, sizes; pure functions."""

from __future__ import annotations

import pytest

from bot.jobs.spec import (
    ASPECTS,
    MAX_PROMPT_CHARS,
    BadInput,
    Options,
    build_spec,
    clean_text,
    fit_aspect,
    parse_prompt_flags,
)
from engine.protocol import ModelSpec

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
        ({"prompt": "x", "aspect": "5:1"}, "Aspect `5:1` is not offered"),
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
