"""Style references at the core's door: which results a member may name (--sref), how a
reference is written, and the refusals, on a real SQLite file (no engine runs)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.core.door import NO_INPUTS, Accepted, Origin
from bot.core.references import Pointer, pointer_of
from bot.core.refusals import Refusal, RefusalKind
from bot.jobs.spec import BadInput, reference_scale
from tests.stores import open_stores, service_on

from .test_door import CONFIG, MEMBER, OTHER, World, world_of

# A second model with an IP-Adapter of its own, and a third that takes its family's (hub
# paths, and a family the config names: no engine loads them here).
STYLED = """
[models.styled]
source = "{source}"
width = 64
height = 64
ip_adapter = "h94/IP-Adapter/models/ip-adapter_sd15.safetensors"
image_encoder = "h94/IP-Adapter/models/image_encoder"

[models.xl]
source = "{source}"
width = 64
height = 64
family = "sdxl"

[families.sdxl]
ip_adapter = "h94/IP-Adapter/sdxl_models/ip-adapter_sdxl.safetensors"
image_encoder = "h94/IP-Adapter/sdxl_models/image_encoder"
"""


@pytest.fixture
async def world(tmp_path: Path, tiny_model_dir: Path) -> AsyncIterator[World]:
    roomy = CONFIG.replace("images_per_day = 4", "images_per_day = 40")
    extra = roomy.replace("member_burst = 3", "member_burst = 30") + STYLED.format(
        source=tiny_model_dir
    )
    async with open_stores(tmp_path, extra, tiny_model_dir) as stores:
        yield world_of(stores, service_on(stores))


@pytest.mark.parametrize(
    ("word", "pointer"),
    [
        ("3fa9c01b2e", Pointer("3fa9c01b2e", 1)),
        ("3fa9c01b2e/3", Pointer("3fa9c01b2e", 3)),
        (
            "https://cdn.discordapp.com/attachments/1/2/atelier-3fa9c01b2e-2.png?ex=1&is=2",
            Pointer("3fa9c01b2e", 2),
        ),
        ("https://atelier.example/v1/jobs/3fa9c01b2e?image=4", Pointer("3fa9c01b2e", 4)),
    ],
)
def test_a_reference_names_a_job_image_by_id_or_link(word: str, pointer: Pointer) -> None:
    assert pointer_of(word) == pointer


@pytest.mark.parametrize(
    "word", ["https://example.com/cat.png", "a/b/c", "ftp://x/atelier-a-1.png"]
)
def test_anything_else_is_refused_in_one_sentence(word: str) -> None:
    with pytest.raises(BadInput, match=r"^I know no result .* attach the image\.$"):
        pointer_of(word)


def test_style_weight_maps_onto_the_adapter_scale() -> None:
    assert [reference_scale(w) for w in (0, 50, 100, 550, 1000)] == [0.0, 0.5, 1.0, 1.5, 2.0]


async def styled(
    world: World, member: object, words: str, model: str = "styled"
) -> Accepted | Refusal:
    draft = world.draft(f"a lighthouse --sref {words}", model=model)
    return await world.core.door.submit(member, draft, NO_INPUTS, Origin.SLASH)  # type: ignore[arg-type]


async def test_own_and_public_results_are_taken_after_private_and_unknown_ones_refused(
    world: World,
) -> None:
    public = await world.finished_job(OTHER, images=2)
    accepted = await styled(world, MEMBER, f"{public}/2")
    assert isinstance(accepted, Accepted), accepted
    (spec,) = accepted.specs
    (copy,) = spec.references
    assert copy.startswith("inputs/") and spec.reference_mode == "style"
    assert spec.reference_scale == 1.0 and spec.input_paths["reference_1"] == copy
    assert (world.stores.config.storage.data_dir / copy).read_bytes() == b"png"

    private = await world.finished_job(dataclasses.replace(OTHER, channel_id=None))
    own_private = await world.finished_job(dataclasses.replace(MEMBER, channel_id=None))
    assert isinstance(await styled(world, MEMBER, own_private), Accepted)
    for word in (private, f"{public}/3", "0000000000"):
        refused = await styled(world, MEMBER, word)
        assert isinstance(refused, Refusal) and refused.kind is RefusalKind.BAD_INPUT
        assert refused.reason.startswith(f"I know no result `{word}`")


async def test_a_model_with_its_familys_ip_adapter_takes_a_style_reference(
    world: World,
) -> None:
    source = await world.finished_job(MEMBER)
    accepted = await styled(world, MEMBER, source, model="xl")
    assert isinstance(accepted, Accepted), accepted
    (spec,) = accepted.specs
    assert spec.model == "xl" and spec.reference_mode == "style" and len(spec.references) == 1


async def test_a_model_without_an_ip_adapter_refuses_a_style_reference(world: World) -> None:
    source = await world.finished_job(MEMBER)
    draft = world.draft(f"a lighthouse --sref {source}", model="tiny")
    refused = await world.core.door.submit(MEMBER, draft, NO_INPUTS, Origin.SLASH)
    assert isinstance(refused, Refusal) and refused.kind is RefusalKind.BAD_INPUT
    assert refused.reason == (
        "Model `tiny` has no IP-Adapter configured, so it takes no style reference (`--sref`)"
        " or blend; models that have one: styled, xl."
    )
