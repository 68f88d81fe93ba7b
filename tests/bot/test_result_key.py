"""The result cache's key: every field of a spec that decides its pixels changes it, and
nothing else does (bot.jobs.cache.result_key)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bot.jobs.cache import IMAGE_LISTS, PROVENANCE, result_key, weight_sources
from bot.jobs.spec import JobSpec
from bot.jobs.weights import WeightHashes
from engine.protocol import ModelSpec
from tests.stores import spec

MODEL = ModelSpec(source="models/tiny")
INPUTS = {"init_image": "a" * 64, "mask_image": "b" * 64, "control_image": "c" * 64}
# A spec with every input image, so that every field has a value to change.
BASE = spec(
    init_image="inputs/x/init.png", mask_image="inputs/x/mask.png", control_image="inputs/x/c.png"
)
# The fields whose value the key reads (an input image is read by its bytes, below).
KEYED = sorted(set(JobSpec.model_fields) - PROVENANCE - IMAGE_LISTS - set(BASE.input_paths))


def key_of(
    job: JobSpec,
    inputs: dict[str, str] = INPUTS,
    model: ModelSpec = MODEL,
    loras: dict[str, str] | None = None,
    weights: dict[str, str] | None = None,
) -> str:
    return result_key(job, model, inputs, loras or {}, weights or {})


@st.composite
def changed_field(draw: st.DrawFn) -> tuple[str, Any]:
    """A keyed field and another value of its type (any value: the key does not validate)."""
    name = draw(st.sampled_from(KEYED))
    annotation = JobSpec.model_fields[name].annotation
    assert annotation is not None
    value = draw(st.from_type(annotation))  # type: ignore[arg-type]
    assume(value != getattr(BASE, name))
    return name, value


@settings(max_examples=300, deadline=None)
@given(changed_field())
def test_changing_any_field_changes_the_key(change: tuple[str, Any]) -> None:
    name, value = change
    assert key_of(BASE.model_copy(update={name: value})) != key_of(BASE)


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(KEYED))
def test_an_identical_spec_gives_the_same_key(name: str) -> None:
    """Built again from its own JSON (as a stored spec is read), field by field equal."""
    again = JobSpec.model_validate(BASE.model_dump(mode="json"))
    assert getattr(again, name) == getattr(BASE, name)
    assert key_of(again) == key_of(BASE)


@given(st.sampled_from(sorted(INPUTS)), st.text(min_size=64, max_size=64))
def test_an_input_image_counts_by_its_bytes_not_its_path(name: str, other_hash: str) -> None:
    assume(other_hash != INPUTS[name])
    moved = BASE.model_copy(update={name: "inputs/elsewhere/same.png"})
    assert key_of(moved) == key_of(BASE)
    assert key_of(BASE, INPUTS | {name: other_hash}) != key_of(BASE)


def test_reference_images_count_by_their_bytes_and_order_not_their_paths() -> None:
    styled = BASE.model_copy(update={"references": ("inputs/r/1.png", "inputs/r/2.png")})
    hashes = INPUTS | {"reference_1": "d" * 64, "reference_2": "e" * 64}
    moved = styled.model_copy(update={"references": ("inputs/s/1.png", "inputs/s/2.png")})
    assert key_of(moved, hashes) == key_of(styled, hashes) != key_of(BASE)
    swapped = hashes | {"reference_1": "e" * 64, "reference_2": "d" * 64}
    assert key_of(styled, swapped) != key_of(styled, hashes)


def test_where_an_input_came_from_does_not_count() -> None:
    """Two variations of one image, asked from two jobs' messages, make the same pixels."""
    for name in PROVENANCE:
        assert key_of(BASE.model_copy(update={name: "elsewhere"})) == key_of(BASE)


def test_the_model_counts_by_its_weights_not_its_defaults() -> None:
    assert key_of(BASE, model=MODEL.model_copy(update={"source": "models/other"})) != key_of(BASE)
    assert key_of(BASE, model=MODEL.model_copy(update={"vae": "vaes/sharp"})) != key_of(BASE)
    assert key_of(BASE, model=MODEL.model_copy(update={"steps": 12, "cfg": 3.0})) == key_of(BASE)


async def test_a_lora_counts_by_its_file_bytes_not_its_name_or_source(tmp_path: Path) -> None:
    """A LoRA file replaced under the same name and path makes other pixels: another key."""
    lora = tmp_path / "ink.safetensors"
    lora.write_bytes(b"first weights")
    hashes = WeightHashes()
    before = {"ink": await hashes.identity(str(lora))}
    assert await hashes.identity(str(lora)) == before["ink"]
    lora.write_bytes(b"other weights, another size")
    after = {"ink": await hashes.identity(str(lora))}
    assert key_of(BASE, loras=after) != key_of(BASE, loras=before)


async def test_a_lora_folder_counts_by_the_files_in_it(tmp_path: Path) -> None:
    (tmp_path / "pytorch_lora_weights.safetensors").write_bytes(b"first")
    hashes = WeightHashes()
    before = await hashes.identity(str(tmp_path))
    (tmp_path / "pytorch_lora_weights.safetensors").write_bytes(b"second")
    assert await hashes.identity(str(tmp_path)) != before


async def test_a_lora_from_a_repo_counts_by_its_id() -> None:
    hashes = WeightHashes()
    assert await hashes.identity("org/ink-lora") != await hashes.identity("org/other-lora")


async def stamped_key(model: ModelSpec) -> str:
    """BASE's key with `model`'s weights stamped as the cache stamps them."""
    hashes = WeightHashes()
    weights = {role: await hashes.stamp(source) for role, source in weight_sources(model).items()}
    return key_of(BASE, model=model, weights=weights)


def rewrite(file: Path, data: bytes) -> None:
    """`file` replaced by `data`, its mtime a second later: a filesystem's clock may tick
    more coarsely than two writes in a test (a real replacement comes minutes later)."""
    before = file.stat().st_mtime_ns
    file.write_bytes(data)
    os.utime(file, ns=(before + 10**9, before + 10**9))


async def test_a_rewritten_checkpoint_file_changes_the_key(tmp_path: Path) -> None:
    """A fine-tune of the same architecture has the same size: its mtime tells it apart."""
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"first weights")
    model = ModelSpec(source=str(checkpoint))
    before = await stamped_key(model)
    rewrite(checkpoint, b"other weights")
    assert await stamped_key(model) != before


async def test_a_rewritten_file_in_a_checkpoint_folder_changes_the_key(
    tmp_path: Path,
) -> None:
    (tmp_path / "unet").mkdir()
    weights = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"first")
    (tmp_path / "model_index.json").write_text("{}")
    model = ModelSpec(source=str(tmp_path))
    before = await stamped_key(model)
    rewrite(weights, b"other")
    assert await stamped_key(model) != before


async def test_a_replaced_vae_changes_the_key(tmp_path: Path) -> None:
    vae = tmp_path / "vae.safetensors"
    vae.write_bytes(b"first")
    model = MODEL.model_copy(update={"vae": str(vae)})
    before = await stamped_key(model)
    rewrite(vae, b"other, longer")
    assert await stamped_key(model) != before


async def test_the_same_checkpoint_files_give_the_same_key(tiny_model_dir: Path) -> None:
    """Stamped again (by another cache, as after a restart): the same key."""
    model = ModelSpec(source=str(tiny_model_dir))
    assert await stamped_key(model) == await stamped_key(model)


async def test_a_checkpoint_from_a_repo_counts_by_its_id() -> None:
    hashes = WeightHashes()
    assert await hashes.stamp("org/model") == await hashes.stamp("org/model")
    assert await hashes.stamp("org/model") != await hashes.stamp("org/other-model")
