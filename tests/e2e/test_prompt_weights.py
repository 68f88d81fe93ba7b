"""Prompt weights from Discord end to end: a multi-prompt (`a cat::2 a dog::1`) and an
AUTOMATIC1111 weight (`(red:1.4) apple`) reach the job's spec as the core reads them, and
the engine runs them: a blend of one prompt with itself is that prompt's image, and a
weighted word changes the image the same words make without it."""

from __future__ import annotations

from .conftest import Launch, RunningBot
from .test_lifecycle import pixels
from .test_references import answered, spec_of

SEED = 7


async def weighed(bot: RunningBot, prompt: str) -> tuple[dict[str, object], list[bytes]]:
    """The spec of the job /imagine `prompt` ran (it succeeded), and its image's pixels."""
    job_id, result = await answered(bot, "imagine", {"prompt": prompt, "seed": SEED})
    return spec_of(bot, job_id), pixels(result)


async def test_prompt_weights_typed_in_discord_reach_the_engine(launch_bot: Launch) -> None:
    # The cache off: each job below is a real run on the engine.
    bot = await launch_bot(extra="[cache]\nenabled = false")

    spec, _ = await weighed(bot, "a cat::2 a dog::1")
    assert (spec["prompt"], spec["blend"]) == (
        "a cat::2 a dog::1",
        [["a cat", 2.0], ["a dog", 1.0]],
    )

    spec, weighted = await weighed(bot, "(red:1.4) apple")
    assert (spec["prompt"], spec["blend"]) == ("(red:1.4) apple", [])
    _, plain = await weighed(bot, "red apple")
    assert weighted != plain  # the weight is read, not dropped with its brackets

    spec, twice = await weighed(bot, "a::1 a::1")
    assert spec["blend"] == [["a", 1.0], ["a", 1.0]]
    _, once = await weighed(bot, "a")
    assert twice == once  # a blend is the weighted mean of its prompts' embeddings
