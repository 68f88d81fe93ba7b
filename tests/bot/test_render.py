"""A result as Discord shows it: its embed's fields, and its files within the upload limit."""

from __future__ import annotations

from bot.core.views import Job
from bot.jobs.spec import Options, build_spec
from bot.render import UPLOAD_OVERHEAD, pack_uploads, result_fields
from engine.protocol import LoraWeight, ModelSpec

MODELS = {"sd15": ModelSpec(source="x")}

MIB = 2**20


def test_four_1024_pngs_and_a_grid_fit_the_default_limit_in_two_messages() -> None:
    # A 1024x1024 PNG of a detailed image is about 1.5-3 MB; the grid JPEG well under 1 MB.
    sizes = [600_000, 3 * MIB, 3 * MIB, 3 * MIB, 3 * MIB]
    messages, too_large = pack_uploads(sizes, 10 * MIB)
    assert too_large == []
    assert sorted(i for m in messages for i in m) == [0, 1, 2, 3, 4]
    assert all(sum(sizes[i] for i in m) <= 10 * MIB - UPLOAD_OVERHEAD for m in messages)
    assert len(messages) == 2


def test_a_file_larger_than_the_limit_is_left_for_the_buttons() -> None:
    messages, too_large = pack_uploads([100, 20 * MIB, 100], 10 * MIB)
    assert messages == [[0, 2]] and too_large == [1]


def test_no_message_carries_more_than_ten_files() -> None:
    messages, _ = pack_uploads([10] * 23, 10 * MIB)
    assert [len(m) for m in messages] == [10, 10, 3]


def test_a_tiled_result_says_it_is_a_seamless_texture() -> None:
    spec = build_spec(Options(prompt="old bricks --tile", seed=1), MODELS, "sd15")
    fields = result_fields(Job(id="j1", spec=spec)).fields
    assert ("Tiling", "seamless texture (--tile)", True) in fields
    plain = result_fields(Job(id="j2", spec=spec.model_copy(update={"tile": False}))).fields
    assert [name for name, _, _ in plain] == [
        "Prompt",
        "Negative prompt",
        "Model",
        "Size",
        "Steps",
        "CFG",
        "Sampler",
        "Seed",
    ]


def test_a_draft_says_so_in_a_field_and_the_footer_and_names_its_loras() -> None:
    spec = build_spec(Options(prompt="a harbour", seed=1), MODELS, "sd15")
    drafted = spec.model_copy(
        update={"draft": True, "loras": (LoraWeight(name="ink", weight=0.8),)}
    )
    shown = result_fields(Job(id="j1", spec=drafted, gpu_seconds=1.25))
    names = {name: value for name, value, _ in shown.fields}
    assert names["LoRAs"] == "ink 0.8" and "Enhance" in names["Draft"]
    assert shown.footer == "job j1 · draft · 1.2 GPU s"
    plain = result_fields(Job(id="j2", spec=spec, gpu_seconds=1.25))
    assert {"Draft", "LoRAs"}.isdisjoint(name for name, _, _ in plain.fields)
    assert plain.footer == "job j2 · 1.2 GPU s"
