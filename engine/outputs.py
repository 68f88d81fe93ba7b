"""Output files: PNGs that carry their own recipe, written so no half file is ever seen."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import diffusers
import torch
import transformers
from PIL import Image, PngImagePlugin

from engine.protocol import MODE_INPUTS, BatchJob, GenerateRequest, Mode, OutputImage, SharedParams

# Job fields that say where things are on this machine, not how the image is made.
_LOCAL_FIELDS = {"output_dir", "init_image", "mask_image", "control_image"}
_CONTROL_FIELDS = {"control_type", "control_scale"}


def _unused_job_fields(mode: Mode) -> set[str]:
    # Only an outpainting job has a frame: other recipes stay as they were.
    return set() if mode is Mode.OUTPAINT else {"frame"}


def uses_strength(mode: Mode) -> bool:
    return "init_image" in MODE_INPUTS[mode]


def a1111_parameters(
    request: GenerateRequest, job: BatchJob, sampler: str, seed: int, cfg: float
) -> str:
    """The "parameters" text other Stable Diffusion tools read back from a PNG (`seed`
    and `cfg` are the image's own)."""
    lines = [job.prompt]
    if job.negative_prompt:
        lines.append(f"Negative prompt: {job.negative_prompt}")
    settings = (
        f"Steps: {request.steps}, Sampler: {sampler}, CFG scale: {cfg:g}, "
        f"Seed: {seed}, Size: {request.width}x{request.height}, Model: {request.model}"
    )
    if uses_strength(request.mode):
        settings += f", Denoising strength: {request.strength:g}"
    if request.tile:
        settings += ", Tiling: True"  # as AUTOMATIC1111 writes its seamless images
    if request.loras:
        # AUTOMATIC1111 keeps a LoRA as its tag in the prompt; the names are Atelier's own.
        tags = " ".join(f"<lora:{lora.name}:{lora.weight:g}>" for lora in request.loras)
        lines[0] = f"{lines[0]} {tags}"
    if request.draft:
        settings += ", Draft: True"
    lines.append(settings)
    return "\n".join(lines)


def recipe(
    request: GenerateRequest,
    job: BatchJob,
    *,
    sampler: str,
    scheduler: Mapping[str, Any],
    checkpoint_sha256: str,
    input_sha256: Mapping[str, str],
    seed: int,
    cfg: float,
    index: int,
) -> dict[str, Any]:
    """Everything needed to make this one image again, stored in its "atelier" PNG chunk.

    Only the settings the mode uses are kept (no strength for text-to-image),
    input images are named by their sha256, not by their local path, and
    nothing names the batch: an image's recipe is the same however it ran.
    """
    shared = set(SharedParams.model_fields)
    if not uses_strength(request.mode):
        shared.discard("strength")
    if request.mode is not Mode.CONTROLNET:
        shared -= _CONTROL_FIELDS
    if not request.tile:
        shared.discard("tile")  # an untiled image's recipe stays as it was before --tile
    # Likewise, a recipe names LoRAs and draft mode only where the image used them.
    if not request.loras:
        shared.discard("loras")
    if not request.draft:
        shared.discard("draft")
    made: dict[str, Any] = {
        **request.model_dump(mode="json", include=shared),
        **job.model_dump(mode="json", exclude=_LOCAL_FIELDS | _unused_job_fields(request.mode)),
        "checkpoint_sha256": checkpoint_sha256,
        "sampler": sampler,
        "scheduler": scheduler,
        "inputs": dict(input_sha256),
        "seed": seed,
        "cfg": cfg,
        "batch_seed": job.seed,
        "index": index,
        "versions": {
            "diffusers": diffusers.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    }
    # Scheduler configs hold tuples and the odd non-JSON value: store what JSON keeps.
    plain: dict[str, Any] = json.loads(json.dumps(made, default=str))
    return plain


def write_png(
    image: Image.Image, path: Path, *, parameters: str, recipe: dict[str, Any], seed: int
) -> OutputImage:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", parameters)
    info.add_text("atelier", json.dumps(recipe, ensure_ascii=False))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    data = buffer.getvalue()
    # Write then rename, so a crash never leaves a half-written file under the final name.
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(data)
    os.replace(partial, path)
    return OutputImage(
        path=str(path),
        seed=seed,
        width=image.width,
        height=image.height,
        sha256=hashlib.sha256(data).hexdigest(),
        recipe=recipe,
    )
