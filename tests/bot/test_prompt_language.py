"""Midjourney's prompt language: {…} choices, --flags, sizes, chaos and styles; pure."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.jobs.prompt_language import (
    FLAGS,
    MAX_BRACE_DEPTH,
    ParsedPrompt,
    Style,
    expand_prompt,
    parse_prompt,
    render_prompt,
)
from bot.jobs.spec import (
    GRID_TOLERANCE,
    BadInput,
    JobSpec,
    Options,
    batch_key,
    build_spec,
    build_specs,
    fit_aspect,
    fit_size,
    image_cfgs,
    image_seeds,
)
from engine.protocol import MAX_SEED, MAX_SIDE, MIN_SIDE, SAMPLER_NAMES, ModelSpec

MODELS = {
    "sd15": ModelSpec(source="x", width=512, height=512, steps=30, cfg=7.0),
    "sdxl": ModelSpec(source="y", width=1024, height=1024, steps=25, cfg=5.0),
}
STYLES = {
    "cinematic": Style(prompt="cinematic still of {prompt}, film grain", negative="cartoon"),
    "watercolor": Style(prompt="watercolor painting"),
}


def specs_for(prompt: str, **options: object) -> list[JobSpec]:
    typed = Options(prompt=prompt, **options)  # type: ignore[arg-type]
    return build_specs(typed, MODELS, "sd15", styles=STYLES)


def refusal(prompt: str, **options: object) -> str:
    with pytest.raises(BadInput) as raised:
        specs_for(prompt, **options)
    return str(raised.value)


# Permutations -------------------------------------------------------------


def test_a_choice_makes_one_job_per_option() -> None:
    assert [spec.prompt for spec in specs_for("a {red,blue} fox")] == ["a red fox", "a blue fox"]


def test_choices_multiply_in_order() -> None:
    assert expand_prompt("{a, b} and {c, d}") == ["a and c", "a and d", "b and c", "b and d"]


def test_nested_choices_are_options_of_their_group() -> None:
    assert expand_prompt("a {red, {light, dark} blue} fox") == [
        "a red fox",
        "a light blue fox",
        "a dark blue fox",
    ]


def test_escaped_braces_commas_and_backslashes_stay_literal() -> None:
    assert expand_prompt(r"a \{b\} {c\,d, e} f\\g") == [r"a {b} c,d f\g", r"a {b} e f\g"]


def test_a_prompt_without_choices_is_one_prompt_with_white_space_folded() -> None:
    assert expand_prompt("  a   fox \\n ") == ["a fox \\n"]


def test_an_empty_option_drops_out_of_the_text() -> None:
    assert expand_prompt("a {, big} dog") == ["a dog", "a big dog"]


def test_choices_work_inside_flags() -> None:
    square, wide = specs_for("a fox --ar {1:1, 16:9}")
    assert (square.width, square.height) == (512, 512)
    assert wide.width > wide.height
    assert square.prompt == wide.prompt == "a fox"


def test_permutations_share_one_random_seed_so_only_the_text_differs() -> None:
    red, blue = specs_for("a {red, blue} fox")
    assert red.seed == blue.seed


def test_as_many_permutations_as_the_limit_are_allowed() -> None:
    assert len(expand_prompt("{a, b, c, d} {e, f}", max_permutations=8)) == 8


@given(st.lists(st.lists(st.text("abcxyz ", max_size=5), min_size=1, max_size=4), max_size=4))
def test_count_of_expansions_is_the_product_of_option_counts(
    groups: list[list[str]],
) -> None:
    template = " ".join("{" + ", ".join(options) + "}" for options in groups)
    expected = math.prod(len(options) for options in groups)
    assert len(expand_prompt(template, max_permutations=expected)) == expected


# Text between groups, some of it escaped braces; options may hold escaped backslashes.
_FIXED = st.lists(st.one_of(st.text("abc ,", max_size=6), st.sampled_from([r"\{", r"\}"])))
_OPTION = st.text("abcd \\", max_size=4).map(lambda text: text.replace("\\", r"\\"))
_GROUPS = st.lists(st.tuples(_FIXED, st.lists(_OPTION, min_size=1, max_size=3)), max_size=3)


@given(_GROUPS)
def test_expansions_hold_no_brace_but_the_escaped_ones(
    pieces: list[tuple[list[str], list[str]]],
) -> None:
    template = "".join("".join(fixed) + "{" + ",".join(options) + "}" for fixed, options in pieces)
    escaped = sum(piece in (r"\{", r"\}") for fixed, _ in pieces for piece in fixed)
    for text in expand_prompt(template, max_permutations=10**6):
        assert text.count("{") + text.count("}") == escaped


# Flags --------------------------------------------------------------------


def test_every_flag_is_read_into_its_typed_value() -> None:
    parsed = parse_prompt(
        "a fox --ar 21:9 --seed 42 --steps 20 --cfg 6.5 --n 2 --model sdxl"
        ' --sampler "dpm++ 2m karras" --style cinematic --chaos 30 --stop 80 --no text, blur'
    )
    assert parsed == ParsedPrompt(
        prompt="a fox",
        negative_prompt="text, blur",
        model="sdxl",
        aspect="21:9",
        seed=42,
        steps=20,
        cfg=6.5,
        sampler="DPM++ 2M Karras",
        style="cinematic",
        chaos=30,
        stop=80,
        repeat=2,
    )


def test_aliases_set_the_same_value() -> None:
    assert parse_prompt("x --aspect 7:4 --guidance 4 --repeat 3") == ParsedPrompt(
        prompt="x", aspect="7:4", cfg=4.0, repeat=3
    )


def test_em_dash_and_en_dash_start_flags_as_phones_type_them() -> None:
    parsed = parse_prompt("a fox —ar 16:9 –seed 4 —no text")
    assert (parsed.prompt, parsed.aspect, parsed.seed, parsed.negative_prompt) == (
        "a fox",
        "16:9",
        4,
        "text",
    )


def test_a_dash_inside_a_phrase_is_text() -> None:
    assert parse_prompt("red—blue sky – at dusk").prompt == "red—blue sky – at dusk"


def test_flags_may_stand_anywhere_and_ignore_case() -> None:
    parsed = parse_prompt("a fox --AR 2:1 in the snow")
    assert (parsed.prompt, parsed.aspect) == ("a fox in the snow", "2:1")


def test_samplers_are_quoted_or_one_word() -> None:
    assert parse_prompt('x --sampler "DPM++ 2M Karras"').sampler == "DPM++ 2M Karras"
    assert parse_prompt("x --sampler “Euler a”").sampler == "Euler a"  # a phone's quotes
    assert parse_prompt("x --sampler ddim --seed 1").sampler == "DDIM"


def test_tile_is_a_switch_that_takes_no_value() -> None:
    parsed = parse_prompt("old brick wall --TILE --seed 3 moss")
    assert (parsed.prompt, parsed.tile, parsed.seed) == ("old brick wall moss", True, 3)
    assert parse_prompt("old brick wall").tile is None
    assert parse_prompt("x --no grout --tile").negative_prompt == "grout"


def test_no_reads_up_to_the_next_flag() -> None:
    parsed = parse_prompt("x --no text, watermark --seed 3")
    assert (parsed.negative_prompt, parsed.seed) == ("text, watermark", 3)


_WORDS = st.lists(st.sampled_from(["a", "fox", "red", "in", "snow", "x1"]), max_size=4).map(
    " ".join
)
_NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
_RATIOS = st.tuples(st.integers(1, 40), st.integers(1, 40)).filter(
    lambda r: r[0] <= 4 * r[1] and r[1] <= 4 * r[0]
)


@given(
    prompt=_WORDS,
    negative_prompt=st.none()
    | st.lists(_WORDS.filter(bool), min_size=1, max_size=3).map(", ".join),
    model=st.none() | _NAMES,
    aspect=st.none() | _RATIOS.map(lambda r: f"{r[0]}:{r[1]}"),
    seed=st.none() | st.integers(0, MAX_SEED),
    steps=st.none() | st.integers(1, 150),
    cfg=st.none() | st.floats(0, 30),
    sampler=st.none() | st.sampled_from(SAMPLER_NAMES),
    style=st.none() | _NAMES,
    chaos=st.none() | st.integers(0, 100),
    stop=st.none() | st.integers(10, 100),
    control_type=st.none() | st.sampled_from(["canny", "scribble", "lineart", "none"]),
    tile=st.none() | st.just(True),
    repeat=st.integers(1, 4),
    dash=st.sampled_from(["--", "—", "–"]),
)
def test_rendered_flags_parse_back_equal(dash: str, **values: object) -> None:
    parsed = ParsedPrompt(**values)  # type: ignore[arg-type]
    assert parse_prompt(render_prompt(parsed).replace("--", dash)) == parsed


# Every refusal names what is wrong and what would work.
MESSAGES = [
    ("x --foo 3", "Unknown flag `--foo`; valid flags: --ar, --aspect, --seed, --no, --steps,"),
    ("x --seed", "`--seed` needs a value, e.g. `--seed 42`."),
    ("x --no --seed 2", "`--no` needs a value, e.g. `--no text, watermark`."),
    ("x --seed 1 --seed 2", "`--seed` is given twice; give each flag once."),
    ("x --ar 1:1 --aspect 2:1", "`--ar` is given twice (as `--ar` and `--aspect`)"),
    ('x --sampler "Euler', "The quote after `--sampler` is never closed."),
    ("x --ar wide", "`--ar wide` is not a ratio; write width:height in whole numbers"),
    ("x --ar 16:0", "`--ar 16:0` is not a ratio"),
    ("x --ar 1.5:1", "`--ar 1.5:1` is not a ratio"),
    ("x --ar 5:1", "`--ar 5:1` is out of range; ratios go from 1:4 to 4:1."),
    ("x --aspect 1:5", "`--aspect 1:5` is out of range"),
    ("x --seed many", "`--seed` needs a number from 0 to 4294967295, not `many`."),
    ("x --seed -1", "`--seed` needs a number from 0 to 4294967295, not `-1`."),
    ("x --seed 4294967296", "`--seed` needs a number from 0 to 4294967295, not `4294967296`."),
    ("x --steps 0", "`--steps` needs a number from 1 to 150, not `0`."),
    ("x --steps 2.5", "`--steps` needs a number from 1 to 150, not `2.5`."),
    ("x --cfg high", "`--cfg` needs a number from 0 to 30, not `high`."),
    ("x --guidance 31", "`--guidance` needs a number from 0 to 30, not `31`."),
    ("x --cfg nan", "`--cfg` needs a number from 0 to 30, not `nan`."),
    ("x --n two", "`--n` needs a number from 1 to 4, not `two`."),
    ("x --repeat 0", "`--repeat` needs a number from 1 to 4, not `0`."),
    ("x --n 5", "`--n 5` asks for 5 jobs; the most is 4."),
    ("x --chaos 101", "`--chaos` needs a number from 0 to 100, not `101`."),
    ("x --stop 5", "`--stop` needs a number from 10 to 100, not `5`."),
    ("x --stop all", "`--stop` needs a number from 10 to 100, not `all`."),
    ("x --control depth", "`--control` is one of canny, scribble, lineart, none, not `depth`."),
    ("x --tile --tile", "`--tile` is given twice; give each flag once."),
    ("x --sampler Euler_b", "Unknown sampler `Euler_b`; choose one of: Euler, Euler a, Heun"),
    ("x --model nope", "Unknown model `nope`; available: sd15, sdxl."),
    ("x --style nope", "Unknown style `nope`; available: cinematic, watercolor."),
    ("{a, b, c} {d, e, f}", "The {…} choices in the prompt make 9 prompts; the most is 8."),
    ("a {red fox", "A `{` is never closed; close it with `}` or write `\\{` for a brace."),
    ("a red} fox", "A `}` closes no `{`; write `\\}` for a literal brace."),
    ("{" * (MAX_BRACE_DEPTH + 1) + "x" + "}" * (MAX_BRACE_DEPTH + 1), "nest more than 8 deep"),
    ("--ar 1:1", "The prompt is empty: describe the image you want."),
]


@pytest.mark.parametrize(("prompt", "message"), MESSAGES)
def test_each_refusal_says_what_is_wrong(prompt: str, message: str) -> None:
    assert message in refusal(prompt)


def test_the_unknown_flag_message_lists_every_valid_flag() -> None:
    listed = re.findall(r"--(\w+)", refusal("x --weird").split("valid flags:")[1])
    assert listed == list(FLAGS)


def test_an_unknown_style_says_when_none_is_configured() -> None:
    with pytest.raises(BadInput) as raised:
        build_specs(Options(prompt="x --style noir"), MODELS, "sd15")
    assert str(raised.value) == "Unknown style `noir`; none is configured."


def test_a_typed_em_dash_flag_is_named_with_two_dashes() -> None:
    assert refusal("x —foo 3").startswith("Unknown flag `--foo`")


# Jobs ---------------------------------------------------------------------


def test_ar_21_9_with_two_repeats_and_no_text_on_a_512_model() -> None:
    specs = specs_for("a city --ar 21:9 --n 2 --no text", seed=10, count=2)
    assert len(specs) == 2
    for spec in specs:
        assert spec.width % 8 == 0 and spec.height % 8 == 0
        assert abs(spec.width * spec.height / 512**2 - 1) < 0.02
        assert abs(spec.width / spec.height - 21 / 9) < 0.02
        assert (spec.prompt, spec.negative_prompt) == ("a city", "text")
    # The second job goes on from the first's images instead of repeating them.
    assert [spec.seeds for spec in specs] == [[10, 11], [12, 13]]


def test_repeats_without_a_seed_still_differ() -> None:
    first, second = specs_for("x --n 2")
    assert second.seed == (first.seed + 1) % (MAX_SEED + 1)


def test_permutations_times_repeats_are_every_job() -> None:
    prompts = [spec.prompt for spec in specs_for("a {red, blue} fox --n 2")]
    assert prompts == ["a red fox", "a red fox", "a blue fox", "a blue fox"]


def test_each_permutation_keeps_its_own_flags() -> None:
    assert len(specs_for("x --n {1, 3}")) == 4


def test_the_single_job_builder_refuses_a_prompt_of_several_jobs() -> None:
    with pytest.raises(BadInput, match="This prompt makes 2 jobs"):
        build_spec(Options(prompt="a {red, blue} fox"), MODELS, "sd15")
    assert build_spec(Options(prompt="a {red} fox"), MODELS, "sd15").prompt == "a red fox"


def test_explicit_options_win_over_flags_and_flags_over_personal_defaults() -> None:
    personal: dict[str, object] = {"steps": 12, "cfg": 3.0, "aspect": "16:9", "sampler": "LMS"}
    (spec,) = build_specs(
        Options(
            prompt="x --steps 20 --cfg 9 --no text --sampler Euler",
            steps=40,
            negative_prompt="blur",
        ),
        MODELS,
        "sd15",
        personal=personal,
    )
    assert (spec.steps, spec.negative_prompt) == (40, "blur")  # given beats the flags
    assert (spec.cfg, spec.sampler) == (9.0, "Euler")  # flags beat the member's own
    assert spec.width > spec.height  # the member's own 16:9 fills what is left


def test_model_sampler_chaos_and_stop_flags_reach_the_spec() -> None:
    (spec,) = specs_for('x --model sdxl --sampler "Euler a" --chaos 40 --stop 60')
    assert (spec.model, spec.width, spec.steps, spec.sampler) == ("sdxl", 1024, 25, "Euler a")
    assert (spec.chaos, spec.stop) == (40, 60)


def test_a_spec_without_chaos_or_stop_flags_runs_every_step_without_spread() -> None:
    (spec,) = specs_for("x", seed=1, count=2)
    assert (spec.chaos, spec.stop, spec.seeds, spec.cfgs) == (0, 100, [1, 2], [7.0, 7.0])


def test_chaos_and_stop_reach_the_engine_as_each_images_seed_and_cfg_and_the_stop(
    tmp_path: Path,
) -> None:
    (spec,) = specs_for("x --chaos 50 --stop 50", seed=1, count=2)
    request = spec.to_request("j1", tmp_path, tmp_path)
    (job,) = request.jobs
    assert (job.seed, request.cfg, request.steps, request.stop) == (1, 7.0, 30, 50)
    assert (job.seeds, job.cfgs) == (spec.seeds, spec.cfgs)
    assert job.seeds is not None and job.seeds[0] == 1 and job.seeds[1] != 2


def test_without_chaos_the_engine_derives_seeds_and_uses_the_one_cfg(tmp_path: Path) -> None:
    (spec,) = specs_for("x", seed=1, count=2)
    (job,) = spec.to_request("j1", tmp_path, tmp_path).jobs
    assert (job.seeds, job.cfgs, job.blend) == (None, None, [])


def test_tile_reaches_the_spec_and_the_engines_request(tmp_path: Path) -> None:
    (tiled,) = specs_for("old brick wall --tile", seed=1)
    (plain,) = specs_for("old brick wall", seed=1)
    assert (tiled.prompt, tiled.tile, plain.tile) == ("old brick wall", True, False)
    assert tiled.to_request("j1", tmp_path, tmp_path).tile is True
    assert plain.to_request("j2", tmp_path, tmp_path).tile is False


def test_tiled_and_untiled_jobs_never_share_a_batch() -> None:
    calm, tiled = (specs_for(f"x {flags}", seed=1)[0] for flags in ("", "--tile"))
    assert batch_key(calm) != batch_key(tiled)
    assert batch_key(tiled) == batch_key(specs_for("y --tile", seed=2)[0])


def test_jobs_differing_only_in_chaos_share_a_batch_but_not_across_a_stop() -> None:
    calm, wild, stopped = (specs_for(f"x {flags}")[0] for flags in ("", "--chaos 80", "--stop 50"))
    assert batch_key(calm) == batch_key(wild) != batch_key(stopped)


# Styles -------------------------------------------------------------------


def test_a_style_template_wraps_the_prompt_and_adds_its_negative() -> None:
    (spec,) = specs_for("a fox --style Cinematic --no text")
    assert spec.prompt == "cinematic still of a fox, film grain"
    assert spec.negative_prompt == "text, cartoon"


def test_a_style_without_a_placeholder_is_appended() -> None:
    (spec,) = specs_for("a fox --style watercolor")
    assert (spec.prompt, spec.negative_prompt) == ("a fox, watercolor painting", "")


def test_a_style_that_makes_the_prompt_too_long_says_so() -> None:
    long = {"long": Style(prompt="{prompt} " + "detail " * 300)}
    with pytest.raises(BadInput, match="With style `long` the prompt is"):
        build_specs(Options(prompt="x --style long"), MODELS, "sd15", styles=long)


# Chaos --------------------------------------------------------------------


def test_without_chaos_the_seeds_of_a_job_are_consecutive() -> None:
    assert image_seeds(MAX_SEED, 3) == [MAX_SEED, 0, 1]


@given(st.integers(0, MAX_SEED), st.integers(2, 4), st.integers(1, 100))
def test_chaos_spreads_the_seeds_from_the_first(seed: int, count: int, chaos: int) -> None:
    seeds = image_seeds(seed, count, chaos)
    assert seeds == image_seeds(seed, count, chaos)  # the same every time
    assert seeds[0] == seed and len(set(seeds)) == count
    assert seeds != [(seed + i) % (MAX_SEED + 1) for i in range(count)]
    assert all(0 <= value <= MAX_SEED for value in seeds)


@given(st.floats(0, 30), st.integers(1, 4), st.integers(0, 100))
def test_chaos_spreads_the_cfg_within_its_percentage(cfg: float, count: int, chaos: int) -> None:
    cfgs = image_cfgs(cfg, count, chaos)
    assert len(cfgs) == count and cfgs[0] == round(cfg, 2)
    for value in cfgs:
        assert abs(value - cfg) <= cfg * chaos / 100 + 0.0051 and 0 <= value <= 30


def test_chaos_reaches_its_full_range_above_and_below() -> None:
    assert image_cfgs(8.0, 4, 50) == [8.0, 10.0, 6.0, 12.0]
    assert image_cfgs(8.0, 3, 50) == [8.0, 12.0, 4.0]
    assert image_cfgs(8.0, 1, 50) == [8.0]


# Sizes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aspect", "base", "size"),
    [
        ("1:1", 512, (512, 512)),
        ("16:9", 1024, (1344, 768)),  # on the 64 grid, 1.6% off
        ("16:9", 512, (680, 384)),  # 704x384 would be 3.1% too wide
        ("21:9", 512, (784, 336)),
        ("1:4", 512, (256, 1024)),
        ("1:4", 64, (64, 256)),  # a small model grows rather than bending the ratio
    ],
)
def test_sizes_prefer_the_64_grid_only_when_it_stays_close(
    aspect: str, base: int, size: tuple[int, int]
) -> None:
    assert fit_aspect(aspect, base, base) == size


@given(_RATIOS, st.sampled_from([(512, 512), (768, 768), (512, 768), (1024, 1024)]))
def test_any_ratio_keeps_the_area_on_the_size_grid(
    ratio: tuple[int, int], base: tuple[int, int]
) -> None:
    width, height = fit_aspect(f"{ratio[0]}:{ratio[1]}", *base)
    assert width % 8 == 0 and height % 8 == 0
    assert min(width, height) >= MIN_SIDE and max(width, height) <= MAX_SIDE
    assert abs(width * height / (base[0] * base[1]) - 1) < 0.05
    assert abs(width / height / (ratio[0] / ratio[1]) - 1) < 0.04
    if width % 64 == 0 and height % 64 == 0:
        wanted = ratio[0] / ratio[1]
        assert abs(width / height / wanted - 1) <= GRID_TOLERANCE


def test_a_ratio_off_the_64_grid_falls_back_to_the_8_grid() -> None:
    width, height = fit_size(4 / 3, 512 * 512)
    assert (width, height) == (592, 440)
    assert width % 64 and height % 64
