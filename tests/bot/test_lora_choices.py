"""/imagine's `lora` autocomplete: the configured LoRAs of the chosen model's family."""

from __future__ import annotations

from bot.discord.common import lora_choices
from engine.protocol import Family, LoraSpec

LORAS = {
    "ink": LoraSpec(source="org/ink", family=Family.SD),
    "glow": LoraSpec(source="org/glow", family=Family.SD),
    "film": LoraSpec(source="org/film", family=Family.SDXL),
}


def offered(family: Family | None, current: str) -> list[str]:
    return [choice.value for choice in lora_choices(LORAS, family, current)]


def test_only_the_models_family_is_offered_and_what_was_typed_narrows_it() -> None:
    assert offered(Family.SD, "") == ["glow", "ink"]
    assert offered(Family.SDXL, "") == ["film"]
    assert offered(None, "") == []  # a model of unknown family takes no LoRA
    assert offered(Family.SD, "IN") == ["ink"]


def test_the_last_of_several_is_completed_and_the_ones_before_kept() -> None:
    assert offered(Family.SD, "ink:0.8, gl") == ["ink:0.8, glow"]
    assert offered(Family.SD, "ink:0.8,") == ["ink:0.8, glow", "ink:0.8, ink"]
    # A weight typed after a part of the name is kept.
    assert offered(Family.SD, "glo:0.5") == ["glow:0.5"]
