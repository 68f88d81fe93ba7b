"""LoRAs and draft mode at the door: prompt tags and the option read into a typed LoRA set,
checked against the config (unknown, other family, no draft mode refused in one sentence),
the draft settings, Enhance's full-quality spec, and the config's [loras] section."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, config_from_dict
from bot.jobs.prompt_language import LoraChoice, parse_prompt, read_lora_list, render_prompt
from bot.jobs.spec import (
    BadInput,
    InputImage,
    JobSpec,
    Options,
    batch_key,
    build_specs,
    derived_spec,
    enhanced_spec,
    remixed_spec,
)
from engine.protocol import Family, LoraSpec, LoraWeight, Mode, ModelSpec

MODELS = {
    "sd": ModelSpec(
        source="org/sd", family=Family.SD, steps=30, cfg=7.0, draft_lora="org/lcm-lora-sd"
    ),
    "xl": ModelSpec(source="org/xl", family=Family.SDXL, width=1024, height=1024),
    "unknown": ModelSpec(source="org/what"),
}
LORAS = {
    "ink": LoraSpec(source="org/ink", family=Family.SD, triggers=["ink wash"]),
    "glow": LoraSpec(source="org/glow", family=Family.SD, weight=0.6),
    "film": LoraSpec(source="org/film", family=Family.SDXL),
}


def build(prompt: str, **options: object) -> JobSpec:
    [spec] = build_specs(
        Options.model_validate({"prompt": prompt, **options}), MODELS, "sd", loras=LORAS
    )
    return spec


def test_lora_tags_become_the_jobs_sorted_lora_set_with_default_weights_and_trigger_words() -> None:
    spec = build("a harbour at dusk <lora:ink:0.8> <lora:Glow>")
    assert spec.loras == (LoraWeight(name="glow", weight=0.6), LoraWeight(name="ink", weight=0.8))
    assert spec.prompt == "a harbour at dusk, ink wash"
    # A trigger word already written is not added again.
    assert build("an ink wash harbour <lora:ink>").prompt == "an ink wash harbour"


def test_the_lora_option_joins_the_tags_and_wins_for_a_lora_in_both() -> None:
    spec = build("a harbour <lora:ink:0.3>", loras=read_lora_list("ink:1.5, glow"))
    assert spec.loras == (LoraWeight(name="glow", weight=0.6), LoraWeight(name="ink", weight=1.5))


def test_the_same_set_batches_together_whatever_order_it_was_written_in() -> None:
    one = build("a harbour <lora:ink:0.8> <lora:glow:0.5> --seed 1")
    other = build("a harbour <lora:glow:0.5> <lora:ink:0.8> --seed 2")
    assert batch_key(one) == batch_key(other)
    assert batch_key(one) != batch_key(build("a harbour <lora:ink:0.8> --seed 1"))
    assert batch_key(one) != batch_key(build("a harbour <lora:ink:0.7> <lora:glow:0.5>"))


@pytest.mark.parametrize(
    ("prompt", "model", "reason"),
    [
        ("a fox <lora:sepia>", "sd", "Unknown LoRA `sepia`; LoRAs for `sd`: glow, ink."),
        ("a fox <lora:film>", "sd", "LoRA `film` is made for SDXL models and `sd` is SD 1.x/2.x"),
        ("a fox <lora:ink>", "xl", "LoRA `ink` is made for SD 1.x/2.x models and `xl` is SDXL"),
        ("a fox <lora:ink>", "unknown", "Model `unknown` takes no LoRAs here: its family"),
        ("a fox <lora:ink:5>", "sd", "The weight in `<lora:ink:5>` must be a number from -2 to 2"),
        ("a fox <lora:ink> <lora:INK>", "sd", "LoRA `ink` is named twice"),
        ("a fox --draft", "xl", "Model `xl` has no draft mode (`--draft`); models that have"),
    ],
)
def test_what_a_model_cannot_take_is_refused_with_one_sentence(
    prompt: str, model: str, reason: str
) -> None:
    with pytest.raises(BadInput) as refused:
        build(prompt, model=model)
    assert str(refused.value).startswith(reason)


def test_a_draft_takes_the_models_draft_steps_sampler_and_cfg() -> None:
    draft = build("a lighthouse --draft --steps 40 --seed 9")
    assert (draft.draft, draft.steps, draft.sampler, draft.cfg) == (True, 4, "LCM", 1.5)
    assert batch_key(draft) != batch_key(build("a lighthouse --seed 9"))


def test_enhance_makes_the_draft_again_at_full_quality_from_the_same_seeds() -> None:
    draft = build("a lighthouse <lora:ink> --draft --seed 9", count=4)
    full = enhanced_spec(draft, MODELS)
    assert (full.draft, full.steps, full.sampler, full.cfg) == (False, 30, "DPM++ 2M Karras", 7.0)
    assert (full.seeds, full.prompt, full.loras) == (draft.seeds, draft.prompt, draft.loras)
    with pytest.raises(BadInput, match="This job is not a draft"):
        enhanced_spec(full, MODELS)


def test_a_variation_of_a_draft_stays_a_draft_and_a_remix_may_turn_one_on() -> None:
    draft = build("a lighthouse --draft")
    image = InputImage("images/j/j-1.png", 512, 512)
    varied = derived_spec(draft, ("j", 1), image, Mode.VARIATION, 0.6, 3)
    assert varied.draft and varied.steps >= 4
    remixed = remixed_spec(build("a lighthouse"), "a lighthouse at night --draft", "", MODELS)
    assert (remixed.draft, remixed.steps) == (True, 4)
    with pytest.raises(BadInput, match="A remix keeps the job's LoRAs"):
        remixed_spec(draft, "a lighthouse <lora:ink>", "", MODELS)


def test_tags_and_draft_are_read_out_of_the_prompt_and_written_back() -> None:
    parsed = parse_prompt("a fox <lora:ink:0.8> in snow --draft")
    assert parsed.prompt == "a fox in snow" and parsed.draft
    assert parsed.loras == (LoraChoice(name="ink", weight=0.8),)
    assert parse_prompt(render_prompt(parsed)) == parsed


def test_an_old_stored_spec_has_no_loras_and_is_no_draft() -> None:
    stored = build("a fox").model_dump(exclude={"loras", "draft"})
    spec = JobSpec.model_validate(stored)
    assert (spec.loras, spec.draft) == ((), False)


def test_the_config_reads_loras_resolves_their_files_and_each_models_family(
    tmp_path: Path, tiny_model_set: dict[str, Path]
) -> None:
    (tmp_path / "ink.safetensors").write_bytes(b"")
    raw = {
        "engine": {"devices": ["cpu"], "default_model": "tiny"},
        "models": {
            "tiny": {"source": str(tiny_model_set["sd15"]), "draft_lora": "./ink.safetensors"},
            "xl": {"source": str(tiny_model_set["sdxl"])},
            "hub": {"source": "org/model"},
        },
        "loras": {"ink": {"source": "./ink.safetensors", "family": "sd", "weight": 0.7}},
    }
    config = config_from_dict(raw, tmp_path, "test")
    assert config.loras["ink"].source == str(tmp_path / "ink.safetensors")
    assert config.models["tiny"].draft_lora == str(tmp_path / "ink.safetensors")
    families = {name: model.family for name, model in config.models.items()}
    assert families == {"tiny": Family.SD, "xl": Family.SDXL, "hub": None}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"draft_scheduler": "Warp"}, "draft_scheduler 'Warp' is not a sampler"),
        ({"draft_steps": 20}, "models.tiny.draft_steps"),
    ],
)
def test_a_draft_config_that_cannot_work_is_refused_when_the_config_loads(
    tmp_path: Path, change: dict[str, object], reason: str
) -> None:
    raw = {
        "engine": {"devices": ["cpu"], "default_model": "tiny"},
        "models": {"tiny": {"source": "org/tiny", **change}},
    }
    with pytest.raises(ConfigError, match=reason):
        config_from_dict(raw, tmp_path, "test")


def test_a_lora_name_is_one_word(tmp_path: Path) -> None:
    raw = {
        "engine": {"devices": ["cpu"], "default_model": "tiny"},
        "models": {"tiny": {"source": "org/tiny"}},
        "loras": {"ink wash": {"source": "org/ink", "family": "sd"}},
    }
    with pytest.raises(ConfigError, match="a LoRA name is one word"):
        config_from_dict(raw, tmp_path, "test")
