"""LoRAs and draft mode end to end: /imagine with `<lora:…>` and --draft (and the same
through the `lora` and `draft` options) on the tiny model with the tiny LoRA configured
as `ink` and as the draft LoRA, then the ✨ Enhance button under the draft."""

from __future__ import annotations

from tests.configs import TINY_LORA, TINY_LORA_TRIGGER
from tests.discord_server import Message

from .conftest import RunningBot
from .test_imagine import finished
from .test_modes import job_id_of
from .test_references import answered, image_of, spec_of


def field(message: Message, name: str) -> str | None:
    fields = message.embeds[0]["fields"]
    return next((f["value"] for f in fields if f["name"] == name), None)


async def test_a_lora_draft_is_labelled_and_enhance_makes_it_at_full_quality(
    running_bot: RunningBot,
) -> None:
    bot = running_bot
    imagine = next(c for c in bot.server.commands if c["name"] == "imagine")
    options = {option["name"]: option for option in imagine["options"]}
    assert options["lora"].get("autocomplete") is True  # the configured LoRAs, by family
    assert options["draft"]["type"] == 5  # a boolean

    plain_id, plain = await answered(bot, "imagine", {"prompt": "a lighthouse", "seed": 5})
    draft_id, draft = await answered(
        bot, "imagine", {"prompt": f"a lighthouse <lora:{TINY_LORA}:0.5> --draft", "seed": 5}
    )
    spec = spec_of(bot, draft_id)
    assert spec["loras"] == [{"name": TINY_LORA, "weight": 0.5}] and spec["draft"] is True
    assert (spec["sampler"], spec["cfg"]) == ("LCM", 1.5)
    assert spec["prompt"] == f"a lighthouse, {TINY_LORA_TRIGGER}"  # its trigger word added
    assert image_of(draft) != image_of(plain)
    # Labelled a draft, its LoRA named, and Enhance offered (under the draft only).
    assert field(draft, "Draft") is not None and field(draft, "LoRAs") == f"{TINY_LORA} 0.5"
    assert "· draft" in draft.embeds[0]["footer"]["text"]
    assert f"atelier:enh:{draft_id}" in draft.custom_ids
    assert field(plain, "Draft") is None and f"atelier:enh:{plain_id}" not in plain.custom_ids

    # The options say the same as the prompt's tag and flag.
    option_id, _ = await answered(
        bot,
        "imagine",
        {"prompt": "a lighthouse", "lora": f"{TINY_LORA}:0.5", "draft": True, "seed": 6},
    )
    by_option = spec_of(bot, option_id)
    assert {k: v for k, v in by_option.items() if k != "seed"} == {
        k: v for k, v in spec.items() if k != "seed"
    }

    enhance = await bot.server.click_button(draft, f"atelier:enh:{draft_id}")
    assert (await enhance.wait_for_callback(timeout=3)).type == 5
    enhanced_id = job_id_of(await enhance.wait_for_original(lambda m: "queued" in m.content))
    enhanced = await enhance.wait_for_original(finished, timeout=120)
    full = spec_of(bot, enhanced_id)
    assert full["draft"] is False and full["loras"] == spec["loras"]
    assert (full["seed"], full["sampler"], full["cfg"]) == (spec["seed"], "Euler", 7.0)
    assert field(enhanced, "Draft") is None and image_of(enhanced) != image_of(draft)
    assert f"atelier:enh:{enhanced_id}" not in enhanced.custom_ids


async def test_an_unknown_lora_and_a_bad_weight_are_refused_privately(
    running_bot: RunningBot,
) -> None:
    server = running_bot.server
    for options, reason in (
        ({"prompt": "a fox <lora:sepia>"}, f"Unknown LoRA `sepia`; LoRAs for `tiny`: {TINY_LORA}."),
        ({"prompt": "a fox", "lora": f"{TINY_LORA}:9"}, f"The weight in `{TINY_LORA}:9` must"),
    ):
        ix = await server.send_slash_command("imagine", options)
        answer = await ix.wait_for_callback(timeout=5)
        assert answer.type == 4 and answer.data["flags"] & 64, answer  # private
        assert reason in answer.data["content"]
    assert running_bot.rows("select id from jobs") == []
