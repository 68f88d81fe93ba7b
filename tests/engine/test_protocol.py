"""The batch request's shape and the compatibility rule the bot groups jobs by (no torch)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from engine.protocol import (
    MAX_IMAGES_PER_BATCH,
    MAX_IMAGES_PER_JOB,
    BatchJob,
    Frame,
    GenerateRequest,
    Mode,
    SharedParams,
    batch_key,
    decode_request,
    encode,
)
from engine.wire import job_ids_of

SHARED: dict[str, Any] = {
    "model": "tiny",
    "width": 512,
    "height": 512,
    "steps": 30,
    "cfg": 7.0,
    "sampler": "Euler a",
}
# An outpainting job's picture, half the canvas's sides, in its middle.
FRAME = Frame(left=128, top=128, width=256, height=256)


def shared(**changes: Any) -> SharedParams:
    return SharedParams(**(SHARED | changes))


def job(job_id: str, **changes: Any) -> BatchJob:
    fields = {"job_id": job_id, "prompt": "a fox", "seed": 1, "output_dir": f"/out/{job_id}"}
    return BatchJob(**(fields | changes))


def request(jobs: list[BatchJob], **changes: Any) -> GenerateRequest:
    return GenerateRequest.for_jobs("batch", shared(**changes), jobs)


def test_jobs_differing_only_in_their_own_fields_have_one_batch_key() -> None:
    # Prompts, negatives, seeds, counts and inputs live in BatchJob, not in the key.
    assert set(SharedParams.model_fields).isdisjoint(
        {"prompt", "negative_prompt", "seed", "count", "init_image", "job_id", "output_dir"}
    )
    assert batch_key(shared()) == batch_key(shared())
    assert hash(batch_key(shared())) == hash(batch_key(shared()))


@pytest.mark.parametrize(
    "change",
    [
        {"steps": 20},
        {"model": "xl"},
        {"width": 640},
        {"cfg": 5.0},
        {"sampler": "DDIM"},
        {"mode": Mode.IMG2IMG},
        {"stop": 50},
        {"tile": True},
    ],
)
def test_incompatible_jobs_have_different_batch_keys(change: dict[str, Any]) -> None:
    assert batch_key(shared(**change)) != batch_key(shared())


def test_strength_and_control_settings_part_the_jobs_only_where_the_mode_uses_them() -> None:
    img2img = Mode.IMG2IMG
    assert batch_key(shared(mode=img2img, strength=0.5)) != batch_key(
        shared(mode=img2img, strength=0.7)
    )
    assert batch_key(shared(strength=0.5)) == batch_key(shared(strength=0.7))
    controlnet = Mode.CONTROLNET
    assert batch_key(shared(mode=controlnet, control_scale=0.5)) != batch_key(
        shared(mode=controlnet)
    )
    assert batch_key(shared(mode=controlnet, control_type="scribble")) != batch_key(
        shared(mode=controlnet)
    )
    assert batch_key(shared(control_scale=0.5, control_type="scribble")) == batch_key(shared())


def test_a_request_key_is_its_shared_settings_key() -> None:
    made = request([job("a"), job("b", prompt="a cat", seed=9, count=3)], steps=20)
    assert batch_key(made) == batch_key(shared(steps=20))
    assert (made.job_ids, made.images) == (["a", "b"], 4)


def test_a_batch_request_survives_the_wire() -> None:
    made = request([job("a"), job("b", negative_prompt="blur")])
    assert decode_request(encode(made)) == made


@pytest.mark.parametrize(
    ("jobs", "changes", "message"),
    [
        ([], {}, "at least 1"),
        ([job("a"), job("a")], {}, "its own job_id"),
        (
            [job("a", init_image="/in/a.png"), job("b")],
            {"mode": Mode.IMG2IMG},
            "job b: mode img2img needs init_image",
        ),
        ([job("a", init_image="/in/a.png")], {}, "job a: mode txt2img takes no init_image"),
        (
            [job("a", init_image="/in/a.png")],
            {"mode": Mode.OUTPAINT},
            "job a: mode outpaint needs frame",
        ),
        (
            [job("a", init_image="/in/a.png", frame=FRAME)],
            {"mode": Mode.IMG2IMG},
            "job a: mode img2img takes no frame",
        ),
        (
            [job("a", init_image="/in/a.png", frame=FRAME.model_copy(update={"left": 300}))],
            {"mode": Mode.OUTPAINT},
            "job a: frame 256x256 at \\(300, 128\\) reaches outside the 512x512 canvas",
        ),
        (
            [job("a", init_image="/in/a.png", frame=Frame(left=0, top=0, width=512, height=512))],
            {"mode": Mode.OUTPAINT},
            "covers the whole canvas",
        ),
        (
            [job(str(n), count=MAX_IMAGES_PER_JOB) for n in range(17)],
            {},
            f"at most {MAX_IMAGES_PER_BATCH} images",
        ),
    ],
)
def test_a_batch_that_cannot_run_as_one_call_is_refused(
    jobs: list[BatchJob], changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        request(jobs, **changes)


def test_one_request_has_one_set_of_shared_settings() -> None:
    # A second job cannot bring its own steps (or any shared setting): jobs with
    # other settings need other requests.
    with pytest.raises(ValidationError, match="steps"):
        BatchJob(job_id="b", prompt="x", seed=1, output_dir="/out", steps=20)  # type: ignore[call-arg]


def test_a_refused_line_names_every_job_it_carried() -> None:
    line = encode(request([job("a"), job("b")])).replace(b'"width":512', b'"width":513')
    with pytest.raises(ValidationError):
        decode_request(line)
    assert job_ids_of(line) == ["a", "b"]
    assert job_ids_of(b"not json") == []
