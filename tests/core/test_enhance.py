"""Enhance and Upscale of a `--draft` job: the registry's transforms (pure, no I/O) and
where the Enhance button is drawn."""

from __future__ import annotations

import pytest

from bot.config import GenerationConfig
from bot.core.actions import BY_NAME, ActionName, Source, Tweak, buttons_for
from bot.jobs.spec import BadInput, InputImage, JobSpec, Options, build_specs
from bot.store.models import JobState
from engine.protocol import Family, Mode, ModelSpec

MODELS = {
    "sd": ModelSpec(
        source="org/sd", family=Family.SD, steps=30, cfg=7.0, draft_lora="org/lcm-lora-sd"
    )
}


def source_of(prompt: str, count: int = 1) -> Source:
    [spec] = build_specs(Options(prompt=prompt, seed=9, count=count), MODELS, "sd")
    image = InputImage("images/j/j-1.png", 512, 512)
    return Source(job_id="j", spec=spec, number=1, image=image, image_seed=9)


def act(name: ActionName, source: Source) -> JobSpec:
    action = BY_NAME[name]
    assert action.transform is not None
    strength = action.strength_in(GenerationConfig())
    return action.transform(source, Tweak(strength=strength, words=None, models=MODELS, styles={}))


def test_enhance_makes_a_draft_again_at_full_quality_from_the_same_seeds() -> None:
    draft = source_of("a lighthouse --draft", count=4)
    full = act(ActionName.ENHANCE, draft)
    assert (full.draft, full.steps, full.sampler, full.cfg) == (False, 30, "DPM++ 2M Karras", 7.0)
    assert (full.seeds, full.prompt, full.count) == (draft.spec.seeds, "a lighthouse", 4)
    with pytest.raises(BadInput, match="This job is not a draft"):
        act(ActionName.ENHANCE, source_of("a lighthouse"))


def test_an_upscale_of_a_draft_is_made_at_full_quality_from_the_images_seed() -> None:
    larger = act(ActionName.UPSCALE, source_of("a lighthouse --draft"))
    assert (larger.mode, larger.draft, larger.seed) == (Mode.UPSCALE, False, 9)
    assert (larger.sampler, larger.cfg, larger.width) == ("DPM++ 2M Karras", 7.0, 1024)
    # The same as an upscale of the job made without --draft.
    plain = act(ActionName.UPSCALE, source_of("a lighthouse"))
    assert plain == larger


@pytest.mark.parametrize("images", [1, 4])
def test_enhance_is_drawn_only_under_a_draft_and_every_row_still_fits(images: int) -> None:
    drafted = buttons_for(JobState.SUCCEEDED, images, draft=True)
    plain = buttons_for(JobState.SUCCEEDED, images)
    assert [action.name for action, _ in drafted if action not in {a for a, _ in plain}] == [
        ActionName.ENHANCE
    ]
    assert ActionName.ENHANCE not in {
        action.name for action, _ in buttons_for(JobState.FAILED, images, draft=True)
    }
    rows: dict[int, int] = {}
    for action, _ in drafted:
        assert action.button is not None
        rows[action.button.row or 0] = rows.get(action.button.row or 0, 0) + 1
    assert max(rows.values()) <= 5
