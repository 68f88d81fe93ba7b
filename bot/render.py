"""How a job looks to a member: the result embed, the image grid, the file names.

Pillow only; no Discord objects, so the layout is testable on its own.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from .store.models import Job

GRID_NAME = "grid.jpg"
# The grid is a preview: JPEG, at most this many pixels a side, so it always fits
# beside the full-size PNGs.
GRID_MAX_SIDE = 1024
# Discord allows this many attachments on one message.
MAX_FILES_PER_MESSAGE = 10
# Room left in each message for the JSON payload and multipart framing.
UPLOAD_OVERHEAD = 64 * 1024
EMBED_TEXT_LIMIT = 1024  # Discord's limit for one embed field value


def output_name(job_id: str, index: int) -> str:
    return f"atelier-{job_id}-{index + 1}.png"


def grid_jpeg(images: list[bytes]) -> bytes:
    """A 2x2 contact sheet of up to four same-size images, like Midjourney's grid,
    as a JPEG of at most GRID_MAX_SIDE pixels a side (the full images come as PNGs)."""
    opened = [Image.open(io.BytesIO(data)).convert("RGB") for data in images]
    width, height = opened[0].size
    columns = 1 if len(opened) == 1 else 2
    rows = (len(opened) + columns - 1) // columns
    sheet = Image.new("RGB", (width * columns, height * rows), "black")
    for index, image in enumerate(opened):
        sheet.paste(image, ((index % columns) * width, (index // columns) * height))
    sheet.thumbnail((GRID_MAX_SIDE, GRID_MAX_SIDE))
    buffer = io.BytesIO()
    sheet.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def pack_uploads(sizes: list[int], limit: int) -> tuple[list[list[int]], list[int]]:
    """Split files (by size, in order) into messages that each fit Discord's upload
    `limit` and file count; returns the messages as lists of file indexes, and the
    indexes of files too large to send at all (the V/U buttons still reach them)."""
    budget = limit - UPLOAD_OVERHEAD
    messages: list[list[int]] = [[]]
    used = 0
    too_large = []
    for index, size in enumerate(sizes):
        if size > budget:
            too_large.append(index)
            continue
        if used + size > budget or len(messages[-1]) >= MAX_FILES_PER_MESSAGE:
            messages.append([])
            used = 0
        messages[-1].append(index)
        used += size
    return [message for message in messages if message], too_large


def _clip(text: str, limit: int = EMBED_TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class ResultFields:
    """The parameters a result shows, in display order."""

    title: str
    fields: list[tuple[str, str, bool]]
    footer: str


def result_fields(job: Job) -> ResultFields:
    spec = job.spec
    seeds = ", ".join(f"#{output.index + 1}: {output.seed}" for output in job.outputs)
    fields = [
        ("Prompt", _clip(spec.prompt), False),
        ("Negative prompt", _clip(spec.negative_prompt or "—"), False),
        ("Model", spec.model, True),
        ("Size", f"{spec.width}×{spec.height}", True),
        ("Steps", str(spec.steps), True),
        ("CFG", f"{spec.cfg:g}", True),
        ("Sampler", spec.sampler, True),
        ("Seeds" if len(job.outputs) > 1 else "Seed", seeds or str(spec.seed), True),
    ]
    if spec.tile:
        fields.append(("Tiling", "seamless texture (--tile)", True))
    if spec.loras:
        loras = ", ".join(f"{lora.name} {lora.weight:g}" for lora in spec.loras)
        fields.append(("LoRAs", loras, True))
    # A draft says so where the member looks (a field and the footer), and how to finish it.
    draft = " · draft" if spec.draft else ""
    if spec.draft:
        fields.append(("Draft", "few steps (--draft); ✨ Enhance makes it at full quality", True))
    gpu = f"{draft} · {job.gpu_seconds:.1f} GPU s" if job.gpu_seconds is not None else draft
    if job.cached_from is not None:  # the result cache answered it: no GPU time, free
        fields.append(("From cache", f"the images of job `{job.cached_from}`; free", True))
        gpu = f" · from cache (job {job.cached_from})"
    return ResultFields(title=_clip(spec.prompt, 256), fields=fields, footer=f"job {job.id}{gpu}")


def progress_bar(step: int, total: int, width: int = 20) -> str:
    filled = round(width * step / total) if total else 0
    return "█" * filled + "░" * (width - filled)
