"""Midjourney multi-prompts (`a::2 b::1`) read into the same blend as the HTTP API's
weighted text_prompts, and prompt weights that leave blocked words readable."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.http.models import TextPrompt
from bot.http.translate import split_prompts
from bot.jobs.errors import BadInput
from bot.jobs.prompt_language import Style, parse_prompt, read_blend, render_prompt
from bot.jobs.spec import Options, blocked_term, build_specs, remixed_spec
from engine.protocol import ModelSpec, WeightedPrompt

MODELS = {"sd15": ModelSpec(source="x", width=512, height=512, steps=30, cfg=7.0)}


@pytest.mark.parametrize(
    ("prompt", "blend"),
    [
        ("a red fox::2 snow::1", (("a red fox", 2.0), ("snow", 1.0))),
        ("a::1 a::1", (("a", 1.0), ("a", 1.0))),
        ("hot:: dog", (("hot", 1.0), ("dog", 1.0))),
        ("a fox::1.5 snow", (("a fox", 1.5), ("snow", 1.0))),
        ("a fox:: 0.5 snow::", (("a fox", 0.5), ("snow", 1.0))),
        ("a (red:1.3) fox::2 snow", (("a (red:1.3) fox", 2.0), ("snow", 1.0))),
        ("a fox at 12:30", ()),
    ],
)
def test_a_multi_prompt_reads_as_weighted_prompts(
    prompt: str, blend: tuple[tuple[str, float], ...]
) -> None:
    assert read_blend(prompt) == blend
    parsed = parse_prompt(f"{prompt} --ar 2:1")
    assert parsed.blend == (blend or None)
    assert parse_prompt(render_prompt(parsed)) == parsed


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("::2 snow", "needs words before it"),
        ("a fox::-1 snow", "use `--no a fox`"),
        ("a fox::0 snow", "out of range"),
        ("a fox::101 snow", "out of range"),
    ],
)
def test_a_multi_prompt_out_of_range_is_refused(prompt: str, message: str) -> None:
    with pytest.raises(BadInput, match=message.replace("(", r"\(")):
        read_blend(prompt)


def test_a_multi_prompt_and_text_prompts_make_the_same_blend(tmp_path: Path) -> None:
    """One blend for both doors: the job the engine gets is the same weighted prompts."""
    [typed] = build_specs(Options(prompt="a red fox::2 snow::1 --seed 3"), MODELS, "sd15")
    _, _, blend = split_prompts(
        [TextPrompt(text="snow", weight=1.0), TextPrompt(text="a red fox", weight=2.0)]
    )
    [posted] = build_specs(
        Options(prompt="a red fox, snow", blend=blend, seed=3), MODELS, "sd15", plain=True
    )
    assert typed.prompt == "a red fox::2 snow::1"
    expected = [WeightedPrompt(text="a red fox", weight=2.0), WeightedPrompt(text="snow", weight=1)]
    for spec in (typed, posted):
        assert spec.batch_job("j", tmp_path, tmp_path).blend == expected


def test_a_plain_http_prompt_keeps_its_colons() -> None:
    [spec] = build_specs(Options(prompt="a::2 b"), MODELS, "sd15", plain=True)
    assert spec.blend == ()


def test_a_style_applies_to_each_prompt_of_the_blend() -> None:
    styles = {"film": Style(prompt="{prompt}, on film", negative="blurry")}
    [spec] = build_specs(Options(prompt="fox::2 snow --style film"), MODELS, "sd15", styles=styles)
    assert spec.blend == (("fox, on film", 2.0), ("snow, on film", 1.0))
    assert spec.negative_prompt == "blurry"


def test_a_remix_takes_the_new_words_blend_or_none() -> None:
    [original] = build_specs(Options(prompt="fox::2 snow"), MODELS, "sd15")
    assert remixed_spec(original, "fox::1 rain::3", "", MODELS).blend == (
        ("fox", 1.0),
        ("rain", 3.0),
    )
    plain = remixed_spec(original, "a fox in the rain", "", MODELS)
    assert (plain.prompt, plain.blend) == ("a fox in the rain", ())


@pytest.mark.parametrize(
    "prompt",
    [
        "(gore:1.3)",
        "a (gore) scene",
        "gore++ scene",
        "[gore]",
        "a gore::2 b::1",
        "b::1 gore",
        "(g)ore",
        "(g)(ore)",
        "(go)+re",
        "[go]re",
    ],
)
def test_weights_and_multi_prompts_do_not_hide_a_blocked_word(prompt: str) -> None:
    assert blocked_term(prompt, ["gore"]) == "gore"


@pytest.mark.parametrize("prompt", ["a (gorgeous:1.2) view", "big::1 ore mine", "(a)(gorge)"])
def test_weights_do_not_make_blocked_words_of_others(prompt: str) -> None:
    assert blocked_term(prompt, ["gore"]) is None
