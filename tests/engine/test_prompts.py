"""Prompt embeddings through compel (engine.prompts) on the tiny models: weighted words,
prompts past 77 tokens, blends, SDXL's two text encoders, and batches of jobs whose
embeddings differ in length."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from engine.models import ModelRegistry
from engine.pipelines import generate
from engine.prompts import compel_syntax, prompt_embeddings
from engine.protocol import ControlType, JobResult, Mode, WeightedPrompt

from .conftest import make_batch, make_request, only_result
from .test_pipelines import no_progress, pixels

# The tiny tokenizer spells one token per byte: "a red cube" is BOS, `a`, `r e d`, `c u b e`.
PROMPT = "a red cube"
RED = slice(2, 5)
# Past the 75 tokens of one chunk (77 with BOS and EOS): the tail is in a second chunk.
LONG = "a red cube on a wooden table in a sunny kitchen, photographed from above, " * 2


def embeddings(
    registry: ModelRegistry, model: str, parts: list[tuple[str, float]], negative: str = ""
) -> dict[str, torch.Tensor]:
    loaded = registry.get(model)
    pipeline = loaded.pipeline_for(Mode.TXT2IMG, ControlType.CANNY)
    return prompt_embeddings(pipeline, loaded.family, parts, negative)


def image(registry: ModelRegistry, folder: Path, **changes: Any) -> bytes:
    request = make_request(folder, **({"seed": 5} | changes))
    return pixels(only_result(generate(request, registry, no_progress)).images[0].path)


@pytest.mark.parametrize(
    ("typed", "compel"),
    [
        ("a (red:1.3) cube", "a (red)1.3 cube"),
        ("a (dark red: 0.7) cube", "a (dark red)0.7 cube"),
        ("a [red] cube", "a (red)- cube"),
        ("a [[red]] cube", "a ((red)-)- cube"),
        ("a red++ cube", "a red++ cube"),
        ("a (red cube", "a (red cube"),
    ],
)
def test_automatic1111_weights_are_written_in_compels_syntax(typed: str, compel: str) -> None:
    assert compel_syntax(typed) == compel


def test_a_plain_prompt_is_encoded_as_the_pipeline_encodes_it(studio: ModelRegistry) -> None:
    pipeline = studio.get("plain").pipeline_for(Mode.TXT2IMG, ControlType.CANNY)
    own, own_negative = pipeline.encode_prompt(
        PROMPT, torch.device("cpu"), 1, True, negative_prompt="blurry"
    )
    ours = embeddings(studio, "plain", [(PROMPT, 1.0)], "blurry")
    torch.testing.assert_close(ours["prompt_embeds"], own)
    torch.testing.assert_close(ours["negative_prompt_embeds"], own_negative)


@pytest.mark.parametrize("typed", ["a (red:1.3) cube", "a (red)1.3 cube"])
def test_a_weighted_word_scales_its_tokens_distance_from_the_empty_prompt(
    studio: ModelRegistry, typed: str
) -> None:
    """compel's weighting: a token of weight w is empty + (plain - empty) * w; the
    other tokens keep their plain embedding."""
    plain = embeddings(studio, "plain", [(PROMPT, 1.0)])["prompt_embeds"]
    empty = embeddings(studio, "plain", [("", 1.0)])["prompt_embeds"]
    weighted = embeddings(studio, "plain", [(typed, 1.0)])["prompt_embeds"]
    expected = empty[:, RED] + (plain[:, RED] - empty[:, RED]) * 1.3
    torch.testing.assert_close(weighted[:, RED], expected)
    assert not torch.allclose(weighted[:, RED], plain[:, RED])
    assert torch.equal(weighted[:, : RED.start], plain[:, : RED.start])
    assert torch.equal(weighted[:, RED.stop :], plain[:, RED.stop :])


def test_a_lessened_word_is_weighted_down(studio: ModelRegistry) -> None:
    plain = embeddings(studio, "plain", [(PROMPT, 1.0)])["prompt_embeds"]
    lessened = embeddings(studio, "plain", [("a [red] cube", 1.0)])["prompt_embeds"]
    minus = embeddings(studio, "plain", [("a red- cube", 1.0)])["prompt_embeds"]
    assert torch.equal(lessened, minus)
    assert not torch.allclose(lessened, plain)


def test_a_prompt_past_77_tokens_keeps_its_tail(studio: ModelRegistry, tmp_path: Path) -> None:
    long = embeddings(studio, "plain", [(LONG, 1.0)], "blurry")
    assert long["prompt_embeds"].shape[1] == 2 * 77
    # The negative prompt is padded to the prompt's length.
    assert long["negative_prompt_embeds"].shape == long["prompt_embeds"].shape
    # The tail changes the image: the text encoder's 77 tokens would have cut it off.
    first = image(studio, tmp_path / "first", model="plain", prompt=LONG + "at night")
    other = image(studio, tmp_path / "other", model="plain", prompt=LONG + "at noon!")
    again = image(studio, tmp_path / "again", model="plain", prompt=LONG + "at night")
    assert first != other
    assert first == again


def test_the_same_prompt_blended_with_itself_is_that_prompt(
    studio: ModelRegistry, tmp_path: Path
) -> None:
    """`a::1 a::1` (or text_prompts of one text twice): the blend is `a` itself, to
    the bit, in its embeddings and its image; long and weighted parts included."""
    for text in (PROMPT, "a (red:1.3) cube", LONG):
        alone = embeddings(studio, "plain", [(text, 1.0)], "blurry")
        twice = embeddings(studio, "plain", [(text, 1.0), (text, 1.0)], "blurry")
        assert alone.keys() == twice.keys()
        assert all(torch.equal(alone[name], twice[name]) for name in alone)
    blend = [WeightedPrompt(text=PROMPT, weight=1.0)] * 2
    assert image(studio, tmp_path / "blend", model="plain", blend=blend) == image(
        studio, tmp_path / "plain", model="plain", prompt=PROMPT
    )


def test_blended_parts_of_different_lengths_are_padded_and_averaged(
    studio: ModelRegistry,
) -> None:
    short = embeddings(studio, "plain", [(PROMPT, 1.0)])["prompt_embeds"]
    long = embeddings(studio, "plain", [(LONG, 1.0)])["prompt_embeds"]
    empty = embeddings(studio, "plain", [("", 1.0)])["prompt_embeds"]
    blend = embeddings(studio, "plain", [(PROMPT, 3.0), (LONG, 1.0)])["prompt_embeds"]
    padded = torch.cat([short, empty], dim=1)
    torch.testing.assert_close(blend, padded * 0.75 + long * 0.25)


def test_sdxl_weights_long_prompts_and_pooled_embeddings(
    studio: ModelRegistry, tmp_path: Path
) -> None:
    plain = embeddings(studio, "xl", [(PROMPT, 1.0)])
    weighted = embeddings(studio, "xl", [("a (red:1.3) cube", 1.0)])
    assert set(plain) == {
        "prompt_embeds",
        "negative_prompt_embeds",
        "pooled_prompt_embeds",
        "negative_pooled_prompt_embeds",
    }
    assert torch.equal(plain["prompt_embeds"][:, :2], weighted["prompt_embeds"][:, :2])
    assert not torch.allclose(plain["prompt_embeds"][:, RED], weighted["prompt_embeds"][:, RED])
    # No negative prompt: zeros, as SDXL's own encoding gives them.
    assert not plain["negative_prompt_embeds"].any()
    assert not plain["negative_pooled_prompt_embeds"].any()
    long = embeddings(studio, "xl", [(LONG, 1.0)], "blurry")
    assert long["prompt_embeds"].shape[1] == 2 * 77
    assert long["negative_prompt_embeds"].shape == long["prompt_embeds"].shape
    assert long["pooled_prompt_embeds"].shape == plain["pooled_prompt_embeds"].shape
    first = image(studio, tmp_path / "first", model="xl", prompt=LONG + "at (night:1.2)")
    other = image(studio, tmp_path / "other", model="xl", prompt=LONG + "at (noon!:1.2)")
    assert first != other


def test_jobs_with_prompts_of_different_lengths_share_a_batch(
    studio: ModelRegistry, tmp_path: Path
) -> None:
    """Each job's images are those it makes alone: a long prompt's images run in their
    own pipeline call rather than padding the short one's embedding."""
    jobs = [("short", PROMPT, 1), ("long", LONG, 2), ("other", "a blue ball", 3)]
    calls: list[int] = []
    folder = str(tmp_path / "batch")
    batch = make_batch(
        [
            {"job_id": job_id, "prompt": prompt, "seed": seed, "output_dir": folder}
            for job_id, prompt, seed in jobs
        ],
        model="plain",
    )
    outcomes = generate(batch, studio, no_progress, calls.append)
    assert calls == [2, 1]
    for (job_id, prompt, seed), outcome in zip(jobs, outcomes, strict=True):
        assert isinstance(outcome, JobResult), outcome
        alone = image(studio, tmp_path / job_id, model="plain", prompt=prompt, seed=seed)
        assert pixels(outcome.images[0].path) == alone
