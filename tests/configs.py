"""Config files for tests: the tiny model, on the CPU, small and fast."""

from __future__ import annotations

from pathlib import Path


def write_config(
    directory: Path, model_dir: Path, extra: str = "", steps: int = 3, engine: str = ""
) -> Path:
    """`directory`/config.toml serving `model_dir` as "tiny"; data goes to `directory`/data.

    `extra` holds whole sections; `engine` more keys of the `[engine]` section."""
    path = directory / "config.toml"
    path.write_text(
        f"""{extra}
[engine]
devices = ["cpu"]
default_model = "tiny"
job_timeout = 120
{engine}

[models.tiny]
source = "{model_dir}"
width = 64
height = 64
steps = {steps}
sampler = "Euler"
"""
    )
    return path
