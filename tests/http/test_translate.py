"""The pure rules at the HTTP door: prompts, samplers, sizes, strengths, styles."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.http.bodies import field_name
from bot.http.models import InitImageMode, MaskSource, Sampler, TextPrompt, TextToImageRequest
from bot.http.openapi import PROMPT_PATTERN
from bot.http.routes import api_document
from bot.http.translate import (
    SAMPLERS,
    RequestError,
    options_for,
    save_request_images,
    size_for,
    split_prompts,
    stop_for,
    strength_for,
    style_named,
)
from bot.jobs.prompt_language import Style
from bot.jobs.spec import InputImage, Inputs, build_specs
from engine.protocol import SAMPLER_NAMES, ModelSpec

SD15 = ModelSpec(source="sd15", width=512, height=512)


def prompts(*pairs: tuple[str, float]) -> list[TextPrompt]:
    return [TextPrompt(text=text, weight=weight) for text, weight in pairs]


def test_every_stability_sampler_runs_as_an_engine_sampler() -> None:
    assert set(SAMPLERS) == set(Sampler)
    assert set(SAMPLERS.values()) <= set(SAMPLER_NAMES)
    assert SAMPLERS[Sampler.K_EULER_ANCESTRAL] == "Euler a"
    assert SAMPLERS[Sampler.K_DPM_2_ANCESTRAL] == "DPM2 a"


def test_negative_weights_make_the_negative_prompt_and_positives_go_heaviest_first() -> None:
    prompt, negative, blend = split_prompts(
        prompts(("a fox", 0.5), ("blurry", -1), ("a top hat", 1.5), ("ignored", 0), ("text", -0.2))
    )
    assert prompt == "a top hat, a fox"
    assert negative == "blurry, text"
    assert blend == (("a top hat", 1.5), ("a fox", 0.5))
    assert split_prompts(prompts(("one prompt", 1))) == ("one prompt", "", ())


def test_prompts_without_a_positive_one_are_refused_naming_the_field() -> None:
    with pytest.raises(RequestError, match=r"^text_prompts: give at least one prompt"):
        split_prompts(prompts(("blurry", -1), ("   ", 1)))
    with pytest.raises(RequestError, match=r"^text_prompts: the positive prompts are"):
        split_prompts(prompts(("x" * 1000, 1), ("y" * 1000, 1)))


@pytest.mark.parametrize(
    ("mode", "image_strength", "start", "strength"),
    [
        (InitImageMode.IMAGE_STRENGTH, 0.35, 0.9, 0.65),
        (InitImageMode.IMAGE_STRENGTH, 1.0, 0.9, 0.05),  # the engine repaints at least 5%
        (InitImageMode.IMAGE_STRENGTH, 0.0, 0.9, 1.0),
        (InitImageMode.STEP_SCHEDULE, 0.35, 0.4, 0.4),
    ],
)
def test_image_strength_and_step_schedule_become_the_engines_strength(
    mode: InitImageMode, image_strength: float, start: float, strength: float
) -> None:
    assert strength_for(mode, image_strength, start) == strength


def test_step_schedule_end_becomes_the_jobs_stop() -> None:
    assert (stop_for(None), stop_for(0.0), stop_for(0.25), stop_for(1.0)) == (100, 100, 75, 10)


def test_sizes_come_from_the_request_the_input_image_or_the_model() -> None:
    assert size_for(None, None, SD15, None) is None  # the core's rule: aspect, else square
    assert size_for(768, None, SD15, None) == (768, 512)
    assert size_for(640, 640, SD15, InputImage("x", 1024, 768)) == (1024, 768)
    assert size_for(None, None, SD15, InputImage("x", 1001, 500)) == (728, 360)
    with pytest.raises(RequestError) as refused:
        size_for(1536, 1024, SD15, None)
    assert refused.value.name == "invalid_pixel_count"
    assert str(refused.value).startswith("width: 1536x1024 is 1,572,864 pixels")


def spec_of(body: dict[str, Any], personal: dict[str, object]) -> Any:
    """The job the core builds from a text-to-image body, as the HTTP door asks for it."""
    request = TextToImageRequest.model_validate(body)
    styles = {"Cinematic": Style(prompt="film still of {prompt}", negative="cartoon")}
    options = options_for(
        request,
        request.text_prompts,
        "sd15",
        {"sd15": SD15},
        styles,
        size=(request.width, request.height),
    )
    (spec,) = build_specs(options, {"sd15": SD15}, "sd15", Inputs(), personal, styles, plain=True)
    return spec


def test_the_core_builds_the_bodys_job_with_the_members_defaults_under_the_requests() -> None:
    prompts = [{"text": "a fox {red, blue} --ar 1:4 --n 3", "weight": 1}, {"text": "a hat"}]
    spec = spec_of({"text_prompts": prompts, "steps": 9}, {"aspect": "16:9", "steps": 4})
    # Plain text: no flags, no {…} choices, one job; the member's aspect, the body's steps.
    assert spec.prompt == "a fox {red, blue} --ar 1:4 --n 3, a hat"
    assert spec.blend == (("a fox {red, blue} --ar 1:4 --n 3", 1.0), ("a hat", 1.0))
    assert (spec.width, spec.height, spec.steps) == (680, 384, 9)
    sized = spec_of({"text_prompts": prompts[1:], "width": 768}, {"aspect": "16:9"})
    assert (sized.width, sized.height) == (768, 512)  # the request's size wins
    styled = spec_of(
        {"text_prompts": prompts[1:], "style_preset": "cinematic", "seed": 5},
        {"negative_prompt": "blurry"},
    )
    assert (styled.prompt, styled.negative_prompt, styled.seed) == (
        "film still of a hat",
        "blurry, cartoon",
        5,
    )


def test_the_tile_texture_preset_makes_a_seamless_texture() -> None:
    prompts = [{"text": "old bricks --tile"}]
    assert spec_of({"text_prompts": prompts, "style_preset": "tile-texture"}, {}).tile is True
    # Plain text: the flag is words of the prompt, and tiles nothing.
    assert spec_of({"text_prompts": prompts}, {}).tile is False


def test_an_inpainting_repaints_from_scratch_and_an_image_keeps_its_size() -> None:
    image = InputImage("in/a.png", 640, 448)
    request = TextToImageRequest.model_validate({"text_prompts": [{"text": "a fox"}]})
    for inputs, mode, strength in (
        (Inputs(image=image), "img2img", 0.4),
        (Inputs(image=image, mask=InputImage("in/m.png", 640, 448)), "inpaint", 1.0),
    ):
        options = options_for(
            request, request.text_prompts, "sd15", {"sd15": SD15}, {}, inputs=inputs, strength=0.4
        )
        (spec,) = build_specs(options, {"sd15": SD15}, "sd15", inputs, {}, plain=True)
        assert (spec.mode, spec.strength, spec.width, spec.height) == (mode, strength, 640, 448)


def test_style_presets_name_configured_styles_and_ignore_unconfigured_stability_ones() -> None:
    styles = {"Cinematic": Style(prompt="film still of {prompt}", negative="cartoon")}
    assert style_named("cinematic", styles) == "Cinematic"
    assert style_named("anime", styles) is None
    assert style_named(None, styles) is None
    with pytest.raises(RequestError, match=r"^style_preset: unknown style `vaporwave`"):
        style_named("vaporwave", styles)


def test_field_names_are_written_as_the_client_wrote_them() -> None:
    assert field_name(("text_prompts", 1, "text")) == "text_prompts[1][text]"
    assert field_name(("width",)) == "width"
    assert field_name(()) == "body"


def test_multipart_bodies_are_documented_with_stabilitys_field_names() -> None:
    document = api_document(["tiny"])
    schemas = document["components"]["schemas"]
    for name in ("ImageToImageRequest", "MaskingRequest", "ImageJobRequest"):
        form = schemas[name]
        assert "text_prompts" not in form["properties"], name
        assert "text_prompts[0][text]" in form["required"], name
        assert PROMPT_PATTERN in form["patternProperties"], name
        # A form field is sent or left out: no null alternatives.
        assert not any(
            branch.get("type") == "null"
            for field in form["properties"].values()
            for branch in field.get("anyOf", [])
        ), name
    engine_id = document["paths"]["/v1/generation/{engine_id}/text-to-image"]["post"]["parameters"][
        0
    ]
    assert engine_id["schema"]["enum"] == ["tiny"]
    links = document["paths"]["/v1/jobs"]["post"]["responses"]["202"]["links"]
    assert links["getJob"]["parameters"] == {"job_id": "$response.body#/id"}


def half_png(mode: str, left: Any, right: Any) -> bytes:
    image = Image.new(mode, (64, 64), right)
    image.paste(left, (0, 0, 32, 64))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("mask_source", "with_mask", "decodes"),
    [
        (None, False, 1),
        (MaskSource.INIT_IMAGE_ALPHA, False, 1),  # the mask is the init image's alpha
        (MaskSource.MASK_IMAGE_WHITE, True, 2),
        (MaskSource.MASK_IMAGE_BLACK, True, 2),
    ],
)
def test_each_request_image_is_decoded_once(
    mask_source: MaskSource | None,
    with_mask: bool,
    decodes: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened = []
    real_open = Image.open

    def counting_open(fp: Any, *args: Any, **kwargs: Any) -> Image.Image:
        opened.append(fp)
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    image = half_png("RGBA", (0, 0, 0, 0), (255, 0, 0, 255))
    mask = half_png("L", 0, 255) if with_mask else None
    inputs = save_request_images(image, mask, mask_source, tmp_path / "in", tmp_path, 2**20)
    assert len(opened) == decodes
    assert inputs.image is not None and (inputs.mask is not None) == (mask_source is not None)
