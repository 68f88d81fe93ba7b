"""Midjourney's prompt language: {a, b} permutations and --flags, read into typed values.

`expand_prompt` turns one typed prompt into the prompts its {…} choices
make; `parse_prompt` reads the flags of one of them into a `ParsedPrompt`;
`render_prompt` writes a `ParsedPrompt` back as text; `read_blend` reads a multi-prompt
(`a::2 b::1`); `read_loras` the `<lora:name:0.8>` tags of a prompt. Everything here is pure
(no config, no Discord, no randomness): which models and styles exist is
checked by bot.jobs.spec, which turns parsed prompts into JobSpecs.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, fields
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from engine.protocol import (
    MAX_LORA_WEIGHT,
    MAX_REFERENCES,
    MAX_SEED,
    MAX_STEPS,
    MIN_STOP,
    SAMPLER_NAMES,
    ControlType,
)

from .errors import BadInput

DEFAULT_MAX_PERMUTATIONS = 8
MAX_REPEAT = 4  # jobs one prompt may ask for with --n / --repeat
MAX_BRACE_DEPTH = 8  # bounds the recursion of the brace reader
MAX_CFG = 30.0
# Widest aspect ratio either way: 1:4 to 4:1.
MAX_ASPECT = 4
# The largest weight of one prompt of a multi-prompt (`a::100 b::1`): only the ratios count.
MAX_BLEND_WEIGHT = 100.0
# --sw: Midjourney's style weight, 100 by default (bot.jobs.spec.reference_scale).
MAX_STYLE_WEIGHT = 1000


class Style(BaseModel):
    """A `[styles.<name>]` preset that `--style <name>` applies to a prompt."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = Field(
        "",
        description="template with {prompt} where the member's prompt goes, or text appended",
    )
    negative: str = Field("", description="added to the job's negative prompt")

    def apply(self, prompt: str, negative: str) -> tuple[str, str]:
        """The prompt and negative prompt with this style applied."""
        if "{prompt}" in self.prompt:
            prompt = self.prompt.replace("{prompt}", prompt)
        else:
            prompt = ", ".join(part for part in (prompt, self.prompt.strip()) if part)
        negative = ", ".join(part for part in (negative, self.negative.strip()) if part)
        return prompt, negative


class LoraChoice(BaseModel):
    """A LoRA a member asked for, by name, at a weight (None: its configured weight)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    weight: float | None = Field(None, ge=-MAX_LORA_WEIGHT, le=MAX_LORA_WEIGHT)


@dataclass(frozen=True)
class ParsedPrompt:
    """One prompt's text and the flags written in it, each checked and typed.

    None means the flag was not given. `aspect` is "W:H" in whole numbers;
    `sampler` is the canonical name; `model` and `style` are as typed (only
    the config knows which exist).
    """

    prompt: str
    negative_prompt: str | None = None
    model: str | None = None
    aspect: str | None = None
    seed: int | None = None
    steps: int | None = None
    cfg: float | None = None
    sampler: str | None = None
    style: str | None = None
    chaos: int | None = None
    stop: int | None = None
    control_type: str | None = None  # how a ControlNet image is read (ControlType)
    tile: bool | None = None  # --tile: a seamless texture (a switch: True when given)
    draft: bool | None = None  # --draft: fast, with the model's few-step LoRA (a switch)
    loras: tuple[LoraChoice, ...] | None = None  # its <lora:name:weight> tags, in order
    # --sref: the results to take the style of, as typed (job ids or links, checked by
    # the core); --sw their weight, 0-1000.
    references: tuple[str, ...] | None = None
    style_weight: int | None = None
    # `a::2 b::1`: the prompts of a multi-prompt and their weights (read_blend); the
    # prompt keeps them as typed.
    blend: tuple[tuple[str, float], ...] | None = None
    repeat: int = 1  # how many jobs this prompt makes

    def option_values(self) -> dict[str, object]:
        """The flags given, by Options field name (everything but prompt and repeat)."""
        return {
            field.name: value
            for field in fields(self)
            if field.name not in ("prompt", "repeat")
            and (value := getattr(self, field.name)) is not None
        }


@dataclass(frozen=True)
class _Flag:
    field: str  # the ParsedPrompt field it sets
    usage: str  # an example, shown when its value is missing
    switch: bool = False  # takes no value: given, it sets its field to True


# Every flag by the names it is typed as; aliases share a field.
FLAGS: dict[str, _Flag] = {
    "ar": _Flag("aspect", "--ar 16:9"),
    "aspect": _Flag("aspect", "--ar 16:9"),
    "seed": _Flag("seed", "--seed 42"),
    "no": _Flag("negative_prompt", "--no text, watermark"),
    "steps": _Flag("steps", "--steps 30"),
    "cfg": _Flag("cfg", "--cfg 7"),
    "guidance": _Flag("cfg", "--cfg 7"),
    "n": _Flag("repeat", "--n 2"),
    "repeat": _Flag("repeat", "--n 2"),
    "model": _Flag("model", "--model <name>"),
    "sampler": _Flag("sampler", '--sampler "DPM++ 2M Karras"'),
    "style": _Flag("style", "--style <name>"),
    "chaos": _Flag("chaos", "--chaos 50"),
    "stop": _Flag("stop", "--stop 80"),
    "control": _Flag("control_type", "--control scribble"),
    "tile": _Flag("tile", "--tile", switch=True),
    "draft": _Flag("draft", "--draft", switch=True),
    "sref": _Flag("references", "--sref 123"),
    "sw": _Flag("style_weight", "--sw 100"),
}

# A flag starts with `--` and a letter; phones turn `--` into an em dash (—)
# or en dash (–), which start a flag only at the start of a word, so that
# "red—blue" stays text.
_FLAG_START = re.compile(r"(?:--|(?<!\S)[—–])(?=[^\W\d_])(?P<name>\S+)")
_TOKEN = re.compile(r"\S+")
# Phones type curly quotes; any double quote opens and any closes.
_OPEN_QUOTES = '"“”„'
_CLOSE_QUOTE = re.compile('["“”]')
_RATIO = re.compile(r"([0-9]+):([0-9]+)")
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_SIGNED_DECIMAL = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
# A LoRA tag as AUTOMATIC1111 writes it: <lora:name> or <lora:name:weight>.
_LORA_TAG = re.compile(r"<lora:([^:<>\s]+)(?::([^<>]*))?>", re.IGNORECASE)
# Midjourney's multi-prompt separator: `::` and the weight of the text before it.
# Flags whose value is everything up to the next flag (--sref takes several references).
_TO_NEXT_FLAG = ("negative_prompt", "references")
_SEPARATOR = re.compile(r"::\s*(-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))?")


def find_sampler(name: str) -> str:
    """The sampler's canonical name, ignoring case; BadInput lists the valid ones."""
    for known in SAMPLER_NAMES:
        if known.casefold() == name.strip().casefold():
            return known
    raise BadInput(f"Unknown sampler `{name}`; choose one of: {', '.join(SAMPLER_NAMES)}.")


def parse_aspect(aspect: str, label: str | None = None) -> tuple[int, int]:
    """Width and height parts of a "W:H" ratio from 1:4 to 4:1; `label` names it in errors."""
    label = label or f"Aspect `{aspect}`"
    match = _RATIO.fullmatch(aspect.strip())
    width, height = (int(match[1]), int(match[2])) if match else (0, 0)
    if width == 0 or height == 0:
        raise BadInput(
            f"{label} is not a ratio; write width:height in whole numbers, e.g. `--ar 21:9`."
        )
    if width > MAX_ASPECT * height or height > MAX_ASPECT * width:
        raise BadInput(f"{label} is out of range; ratios go from 1:{MAX_ASPECT} to {MAX_ASPECT}:1.")
    return width, height


# Permutations ---------------------------------------------------------------


@dataclass(frozen=True)
class _Group:
    """A {…} choice: each option is a sequence of text and nested groups."""

    options: tuple[tuple[str | _Group, ...], ...]


_ESCAPABLE = "{},\\"


def _read_sequence(text: str, pos: int, depth: int) -> tuple[tuple[str | _Group, ...], int]:
    """Text and groups from `pos` up to the end, or (inside a group) to its `,` or `}`."""
    parts: list[str | _Group] = []
    literal: list[str] = []
    while pos < len(text):
        char = text[pos]
        if char == "\\" and pos + 1 < len(text) and text[pos + 1] in _ESCAPABLE:
            literal.append(text[pos + 1])
            pos += 2
        elif char == "{":
            if depth == MAX_BRACE_DEPTH:
                raise BadInput(
                    f"The {{…}} choices nest more than {MAX_BRACE_DEPTH} deep; flatten them."
                )
            parts.append("".join(literal))
            literal = []
            group, pos = _read_group(text, pos + 1, depth + 1)
            parts.append(group)
        elif depth > 0 and char in ",}":
            break
        elif char == "}":
            raise BadInput("A `}` closes no `{`; write `\\}` for a literal brace.")
        else:
            literal.append(char)
            pos += 1
    parts.append("".join(literal))
    return tuple(part for part in parts if part != ""), pos


def _read_group(text: str, pos: int, depth: int) -> tuple[_Group, int]:
    options = []
    while True:
        option, pos = _read_sequence(text, pos, depth)
        options.append(option)
        if pos == len(text):
            raise BadInput("A `{` is never closed; close it with `}` or write `\\{` for a brace.")
        pos += 1
        if text[pos - 1] == "}":
            return _Group(tuple(options)), pos


def _count(sequence: tuple[str | _Group, ...]) -> int:
    return math.prod(
        sum(_count(option) for option in part.options)
        for part in sequence
        if isinstance(part, _Group)
    )


def _expand(sequence: tuple[str | _Group, ...]) -> list[str]:
    choices = [
        [part]
        if isinstance(part, str)
        else [text.strip() for option in part.options for text in _expand(option)]
        for part in sequence
    ]
    return ["".join(combination) for combination in itertools.product(*choices)]


def expand_prompt(text: str, max_permutations: int = DEFAULT_MAX_PERMUTATIONS) -> list[str]:
    """Every prompt the {…} choices of `text` make, in order, white space folded.

    `a {red, blue} fox` makes "a red fox" and "a blue fox"; groups multiply
    (`{a, b} {c, d}` makes four) and nest (`{red, {light, dark} blue}` is
    three options). Choices work in flags too (`--ar {1:1, 16:9}`).
    `\\{`, `\\}`, `\\,` and `\\\\` are a literal brace, comma and backslash.
    More than `max_permutations` prompts is refused before any is made.
    """
    sequence, _ = _read_sequence(text, 0, 0)
    count = _count(sequence)
    if count > max_permutations:
        raise BadInput(
            f"The {{…}} choices in the prompt make {count:,} prompts; the most is"
            f" {max_permutations}. Remove some choices."
        )
    return [" ".join(prompt.split()) for prompt in _expand(sequence)]


# Flags ----------------------------------------------------------------------


def _read_value(text: str, pos: int, typed: str, flag: _Flag) -> tuple[str, int]:
    """The value after a flag: one word, or a "quoted phrase"; `--no` reads to the next flag."""
    while pos < len(text) and text[pos].isspace():
        pos += 1
    if flag.field in _TO_NEXT_FLAG:
        following = _FLAG_START.search(text, pos)
        end = following.start() if following else len(text)
        value, pos = text[pos:end].strip(), end
        if len(value) > 1 and value[0] in _OPEN_QUOTES and _CLOSE_QUOTE.fullmatch(value[-1]):
            value = value[1:-1].strip()
    elif pos < len(text) and text[pos] in _OPEN_QUOTES:
        close = _CLOSE_QUOTE.search(text, pos + 1)
        if close is None:
            raise BadInput(f"The quote after `--{typed}` is never closed.")
        value, pos = text[pos + 1 : close.start()].strip(), close.end()
    elif pos < len(text) and not _FLAG_START.match(text, pos):
        token = _TOKEN.match(text, pos)
        assert token is not None  # text[pos] is not white space
        value, pos = token.group(), token.end()
    else:
        value = ""
    if not value:
        raise BadInput(f"`--{typed}` needs a value, e.g. `{flag.usage}`.")
    return value, pos


def _whole_number(typed: str, value: str, low: int, high: int) -> int:
    if not (value.isascii() and value.isdigit() and low <= int(value) <= high):
        raise BadInput(f"`--{typed}` needs a number from {low} to {high}, not `{value}`.")
    return int(value)


def _convert(typed: str, field: str, value: str) -> object:
    """The typed value of one flag, checked against its range."""
    match field:
        case "aspect":
            width, height = parse_aspect(value, f"`--{typed} {value}`")
            return f"{width}:{height}"
        case "seed":
            return _whole_number(typed, value, 0, MAX_SEED)
        case "steps":
            return _whole_number(typed, value, 1, MAX_STEPS)
        case "chaos":
            return _whole_number(typed, value, 0, 100)
        case "stop":
            return _whole_number(typed, value, MIN_STOP, 100)
        case "style_weight":
            return _whole_number(typed, value, 0, MAX_STYLE_WEIGHT)
        case "references":
            words = tuple(value.split())
            if len(words) > MAX_REFERENCES:
                raise BadInput(
                    f"`--{typed}` takes at most {MAX_REFERENCES} references; you gave {len(words)}."
                )
            return words
        case "repeat":
            if value.isascii() and value.isdigit() and int(value) > MAX_REPEAT:
                raise BadInput(
                    f"`--{typed} {value}` asks for {int(value):,} jobs; the most is {MAX_REPEAT}."
                )
            return _whole_number(typed, value, 1, MAX_REPEAT)
        case "cfg":
            if not (_DECIMAL.fullmatch(value) and float(value) <= MAX_CFG):
                raise BadInput(f"`--{typed}` needs a number from 0 to {MAX_CFG:g}, not `{value}`.")
            return float(value)
        case "sampler":
            return find_sampler(value)
        case "control_type":
            kinds = [kind.value for kind in ControlType]
            if value.lower() not in kinds:
                raise BadInput(f"`--{typed}` is one of {', '.join(kinds)}, not `{value}`.")
            return value.lower()
        case _:  # model, style, negative_prompt: text, checked against the config later
            return value


def parse_prompt(text: str) -> ParsedPrompt:
    """Read the flags written in one prompt (already expanded) and remove them.

    Flags may stand anywhere, start with `--`, `—` or `–`, and are matched
    ignoring case. Each takes one word or a "quoted phrase"
    (`--sampler "DPM++ 2M Karras"`); `--no` takes everything up to the next
    flag, as `--sref` its references; a switch (`--tile`) takes nothing. An unknown
    flag, a flag given twice and a value out of range are refused, naming the flag:
    nothing that looks like a flag stays in the prompt.
    """
    values: dict[str, object] = {}
    typed_as: dict[str, str] = {}
    kept: list[str] = []
    pos = 0
    while (start := _FLAG_START.search(text, pos)) is not None:
        kept.append(text[pos : start.start()])
        typed = start["name"].lower()
        flag = FLAGS.get(typed)
        if flag is None:
            valid = ", ".join(f"--{name}" for name in FLAGS)
            raise BadInput(f"Unknown flag `--{start['name']}`; valid flags: {valid}.")
        if flag.field in typed_as:
            first = typed_as[flag.field]
            also = f" (as `--{first}` and `--{typed}`)" if first != typed else ""
            raise BadInput(f"`--{first}` is given twice{also}; give each flag once.")
        typed_as[flag.field] = typed
        if flag.switch:
            values[flag.field], pos = True, start.end()
            continue
        value, pos = _read_value(text, start.end(), typed, flag)
        values[flag.field] = _convert(typed, flag.field, value)
    kept.append(text[pos:])
    prompt, loras = read_loras(" ".join(kept))
    prompt = " ".join(prompt.split())
    blend = read_blend(prompt) or None
    return ParsedPrompt(
        prompt=prompt,
        blend=blend,
        loras=loras or None,
        **values,  # type: ignore[arg-type]
    )


def read_loras(prompt: str) -> tuple[str, tuple[LoraChoice, ...]]:
    """The prompt without its `<lora:name:weight>` tags, and the LoRAs they name in order
    (a tag without a weight leaves it to the LoRA's configured one). A LoRA named twice
    or a weight that is not a number from -2 to 2 is refused."""
    choices = [lora_choice(tag[1], tag[2], tag[0]) for tag in _LORA_TAG.finditer(prompt)]
    return _LORA_TAG.sub(" ", prompt), _named_once(choices)


def read_lora_list(text: str) -> tuple[LoraChoice, ...]:
    """The LoRAs of a `lora` option: names with an optional weight, comma-separated
    (`ink:0.8, glow`)."""
    choices = []
    for part in (part.strip() for part in text.split(",")):
        if part:
            name, _, weight = part.partition(":")
            choices.append(lora_choice(name.strip(), weight or None, part))
    return _named_once(choices)


def lora_choice(name: str, weight: str | None, typed: str) -> LoraChoice:
    """One LoRA as typed (`typed` names it in a refusal)."""
    if weight is None:
        return LoraChoice(name=name)
    if not _SIGNED_DECIMAL.fullmatch(weight.strip()) or abs(float(weight)) > MAX_LORA_WEIGHT:
        raise BadInput(
            f"The weight in `{typed}` must be a number from {-MAX_LORA_WEIGHT:g} to"
            f" {MAX_LORA_WEIGHT:g}, e.g. `<lora:{name}:0.8>`."
        )
    return LoraChoice(name=name, weight=float(weight))


def _named_once(choices: list[LoraChoice]) -> tuple[LoraChoice, ...]:
    names = [choice.name.casefold() for choice in choices]
    if twice := next((name for name in names if names.count(name) > 1), None):
        raise BadInput(f"LoRA `{twice}` is named twice; name each LoRA once.")
    return tuple(choices)


def read_blend(prompt: str) -> tuple[tuple[str, float], ...]:
    """The prompts of a multi-prompt with their weights: `a::2 b::1` is `a` at 2 and
    `b` at 1, a missing weight is 1 (`a:: b` is both at 1); () without `::`. The
    engine blends their embeddings by weight, as the HTTP API's weighted text_prompts.
    """
    parts: list[tuple[str, float]] = []
    pos = 0
    for separator in _SEPARATOR.finditer(prompt):
        parts.append(_weighted(prompt[pos : separator.start()], separator[1]))
        pos = separator.end()
    if not parts:
        return ()
    if prompt[pos:].strip():
        parts.append(_weighted(prompt[pos:], None))
    return tuple(parts)


def _weighted(text: str, weight: str | None) -> tuple[str, float]:
    text = text.strip()
    if not text:
        raise BadInput("A `::` weight needs words before it, e.g. `a red fox::2 snow::1`.")
    value = float(weight) if weight is not None else 1.0
    if not 0 < value <= MAX_BLEND_WEIGHT:
        raise BadInput(
            f"The weight of `{text}::{weight}` is out of range: weights go above 0 up to"
            f" {MAX_BLEND_WEIGHT:g}; use `--no {text}` to keep something out."
        )
    return text, value


def _word(value: str) -> str:
    return f'"{value}"' if any(char.isspace() for char in value) else value


def render_prompt(parsed: ParsedPrompt) -> str:
    """`parsed` written back as a prompt with flags; parse_prompt reads it back equal."""
    flags = []
    if parsed.aspect is not None:
        flags.append(f"--ar {parsed.aspect}")
    for name in ("seed", "steps", "chaos", "stop"):
        if (number := getattr(parsed, name)) is not None:
            flags.append(f"--{name} {number}")
    if parsed.cfg is not None:
        # Positional digits of the shortest repr: round-trips, never an exponent.
        flags.append(f"--cfg {format(Decimal(repr(parsed.cfg)), 'f')}")
    if parsed.control_type is not None:
        flags.append(f"--control {parsed.control_type}")
    if parsed.tile:
        flags.append("--tile")
    if parsed.draft:
        flags.append("--draft")
    for lora in parsed.loras or ():
        weight = "" if lora.weight is None else f":{format(Decimal(repr(lora.weight)), 'f')}"
        flags.append(f"<lora:{lora.name}{weight}>")
    for name in ("sampler", "model", "style"):
        if (word := getattr(parsed, name)) is not None:
            flags.append(f"--{name} {_word(word)}")
    if parsed.repeat != 1:
        flags.append(f"--n {parsed.repeat}")
    if parsed.style_weight is not None:
        flags.append(f"--sw {parsed.style_weight}")
    if parsed.references:
        flags.append(f"--sref {' '.join(parsed.references)}")  # reads to the next flag
    if parsed.negative_prompt is not None:
        flags.append(f"--no {parsed.negative_prompt}")  # last: it reads to the next flag
    return " ".join([parsed.prompt, *flags]).strip()
