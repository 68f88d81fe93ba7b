"""How a job looks to a member: the result embed, the image grid, the file names.

Pillow only; no Discord objects, so the layout is testable on its own.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .jobs.spec import JobSpec
from .store.models import Job

GRID_NAME = "grid.png"
EMBED_TEXT_LIMIT = 1024  # Discord's limit for one embed field value


def output_name(job_id: str, index: int) -> str:
    return f"atelier-{job_id}-{index + 1}.png"


def grid_png(paths: list[Path]) -> bytes:
    """A 2x2 contact sheet of up to four same-size images, like Midjourney's grid."""
    images = [Image.open(path).convert("RGB") for path in paths]
    width, height = images[0].size
    columns = 1 if len(images) == 1 else 2
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("RGB", (width * columns, height * rows), "black")
    for index, image in enumerate(images):
        sheet.paste(image, ((index % columns) * width, (index // columns) * height))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


def _clip(text: str, limit: int = EMBED_TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class ResultFields:
    """The parameters a result shows, in display order."""

    title: str
    fields: list[tuple[str, str, bool]]
    footer: str


def result_fields(job: Job) -> ResultFields:
    spec = JobSpec.model_validate(job.spec)
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
    gpu = f" · {job.gpu_seconds:.1f} GPU s" if job.gpu_seconds is not None else ""
    return ResultFields(title=_clip(spec.prompt, 256), fields=fields, footer=f"job {job.id}{gpu}")


def progress_bar(step: int, total: int, width: int = 20) -> str:
    filled = round(width * step / total) if total else 0
    return "█" * filled + "░" * (width - filled)
