"""LoRAs and draft mode on the tiny models: loaded for a batch, gone after, refused clearly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from engine.errors import BadRequest, Cancelled
from engine.memory import GIB
from engine.models import ModelRegistry
from engine.pipelines import generate
from engine.protocol import JobResult, LoraWeight, ModelSpec, batch_key
from tests.loras import lora_config, write_tiny_loras

from .conftest import make_request, only_result
from .test_pipelines import no_progress, pixels


@pytest.fixture(scope="module")
def lora_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_tiny_loras(tmp_path_factory.mktemp("loras"))


@pytest.fixture(scope="module")
def registry(tiny_model_set: dict[str, Path], lora_paths: dict[str, Path]) -> ModelRegistry:
    """ "tiny" with an LCM-style draft LoRA, "plain" without one, "xl" (SDXL); the LoRAs."""
    sd15 = str(tiny_model_set["sd15"])
    specs = {
        "tiny": ModelSpec(source=sd15, draft_lora=str(lora_paths["lcm"]), draft_steps=4),
        "plain": ModelSpec(source=sd15),
        "xl": ModelSpec(source=str(tiny_model_set["sdxl"])),
    }
    return ModelRegistry(specs, torch.device("cpu"), GIB, loras=lora_config(lora_paths))


def weights(registry: ModelRegistry, model: str = "tiny") -> dict[str, torch.Tensor]:
    """Every tensor of the model's UNet and text encoder(s), copied, by name."""
    pipeline = registry.get(model).pipeline
    modules = {"unet": pipeline.unet, "text_encoder": pipeline.text_encoder}
    if getattr(pipeline, "text_encoder_2", None) is not None:
        modules["text_encoder_2"] = pipeline.text_encoder_2
    return {
        f"{part}.{name}": tensor.detach().clone()
        for part, module in modules.items()
        for name, tensor in module.state_dict().items()
    }


def assert_unchanged(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> None:
    assert after.keys() == before.keys()  # no LoRA layer left behind
    assert all(torch.equal(before[name], after[name]) for name in before)


def make(registry: ModelRegistry, output_dir: Path, **changes: Any) -> JobResult:
    return only_result(generate(make_request(output_dir, **changes), registry, no_progress))


def lora(name: str, weight: float) -> list[LoraWeight]:
    return [LoraWeight(name=name, weight=weight)]


def test_a_lora_changes_the_image_and_leaves_the_shared_weights_bit_identical(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    plain = make(registry, tmp_path / "plain")
    before = weights(registry)
    seen: list[int] = []

    def watching(step: int, total: int, previews: object) -> None:
        # While the batch runs, the LoRA's layers are in the shared UNet.
        seen.append(len(registry.get("tiny").pipeline.unet.state_dict()))

    request = make_request(tmp_path / "ink", loras=lora("ink", 1.0))
    with_lora = only_result(generate(request, registry, watching))
    assert seen and min(seen) > len([name for name in before if name.startswith("unet.")])
    assert_unchanged(before, weights(registry))
    again = make(registry, tmp_path / "again")
    assert pixels(with_lora.images[0].path) != pixels(plain.images[0].path)
    assert pixels(again.images[0].path) == pixels(plain.images[0].path)
    recipe = with_lora.images[0].recipe
    assert recipe["loras"] == [{"name": "ink", "weight": 1.0}]
    assert "loras" not in plain.images[0].recipe and "draft" not in plain.images[0].recipe


def test_weights_and_several_loras_each_count(registry: ModelRegistry, tmp_path: Path) -> None:
    full = make(registry, tmp_path / "full", loras=lora("ink", 1.0))
    half = make(registry, tmp_path / "half", loras=lora("ink", 0.5))
    both = make(
        registry,
        tmp_path / "both",
        loras=[LoraWeight(name="glow", weight=0.8), LoraWeight(name="ink", weight=1.0)],
    )
    made = {pixels(result.images[0].path) for result in (full, half, both)}
    assert len(made) == 3
    # The same LoRAs at the same weights make the same image: loading them is repeatable.
    assert pixels(make(registry, tmp_path / "again", loras=lora("ink", 0.5)).images[0].path) == (
        pixels(half.images[0].path)
    )


def test_an_sdxl_lora_runs_on_the_sdxl_model_and_is_unloaded(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    before = weights(registry, "xl")
    plain = make(registry, tmp_path / "plain", model="xl")
    styled = make(registry, tmp_path / "film", model="xl", loras=lora("xlfilm", 1.0))
    assert pixels(styled.images[0].path) != pixels(plain.images[0].path)
    assert_unchanged(before, weights(registry, "xl"))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"loras": lora("sepia", 1.0)}, "unknown LoRA 'sepia'; configured LoRAs: glow, ink"),
        ({"loras": lora("xlfilm", 1.0)}, "LoRA 'xlfilm' is made for sdxl models"),
        ({"loras": lora("ink", 1.0), "model": "xl"}, "LoRA 'ink' is made for sd models"),
        ({"draft": True, "model": "plain"}, "model 'plain' has no draft mode: set draft_lora"),
    ],
)
def test_a_lora_the_model_cannot_take_is_refused_before_anything_runs(
    registry: ModelRegistry, tmp_path: Path, changes: dict[str, Any], reason: str
) -> None:
    with pytest.raises(BadRequest, match=reason.replace("(", r"\(")):
        generate(make_request(tmp_path, **changes), registry, no_progress)


def test_a_cancelled_batch_unloads_its_loras_too(registry: ModelRegistry, tmp_path: Path) -> None:
    before = weights(registry)

    def cancel(step: int, total: int, previews: object) -> None:
        raise Cancelled("cancelled at step 1")

    with pytest.raises(Cancelled):
        generate(make_request(tmp_path, loras=lora("glow", 1.0)), registry, cancel)
    assert_unchanged(before, weights(registry))


def test_a_draft_runs_the_draft_lora_with_its_scheduler_and_steps(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    before = weights(registry)
    steps: list[int] = []

    def counting(step: int, total: int, previews: object) -> None:
        steps.append(total)

    settings: dict[str, Any] = {"sampler": "LCM", "steps": 4, "cfg": 1.5, "seed": 5}
    request = make_request(tmp_path / "draft", draft=True, **settings)
    draft = only_result(generate(request, registry, counting))
    undrafted = make(registry, tmp_path / "plain", **settings)
    assert set(steps) == {4}
    recipe = draft.images[0].recipe
    assert recipe["draft"] is True and recipe["scheduler"]["class"] == "LCMScheduler"
    assert "Steps: 4, Sampler: LCM, CFG scale: 1.5" in parameters(draft)
    assert parameters(draft).endswith("Draft: True")
    assert pixels(draft.images[0].path) != pixels(undrafted.images[0].path)
    assert_unchanged(before, weights(registry))


def parameters(result: JobResult) -> str:
    """The AUTOMATIC1111 "parameters" text of the result's first image."""
    with Image.open(result.images[0].path) as image:
        return str(image.info["parameters"])


def test_jobs_batch_together_only_with_the_same_lora_set_and_draft_setting(
    tmp_path: Path,
) -> None:
    ink = make_request(tmp_path, loras=lora("ink", 1.0))
    assert batch_key(ink) == batch_key(make_request(tmp_path, loras=lora("ink", 1.0)))
    others = [
        make_request(tmp_path),
        make_request(tmp_path, loras=lora("ink", 0.5)),
        make_request(tmp_path, loras=lora("glow", 1.0)),
        make_request(tmp_path, loras=lora("ink", 1.0), draft=True),
    ]
    assert all(batch_key(ink) != batch_key(other) for other in others)


def test_a_request_names_each_lora_once_in_order() -> None:
    with pytest.raises(ValueError, match="named once each, sorted by name"):
        make_request(
            Path("/tmp"),
            loras=[LoraWeight(name="ink", weight=1.0), LoraWeight(name="glow", weight=1.0)],
        )
