"""Config files for tests: the tiny model, on the CPU, small and fast."""

from __future__ import annotations

import tomllib
from pathlib import Path

# The [engine] keys every test config has, unless its `engine` keys say otherwise.
ENGINE_DEFAULTS = {"devices": '["cpu"]', "default_model": '"tiny"', "job_timeout": "120"}


def write_config(
    directory: Path, model_dir: Path, extra: str = "", steps: int = 3, engine: str = ""
) -> Path:
    """`directory`/config.toml serving `model_dir` as "tiny"; data goes to `directory`/data.

    `extra` holds whole sections; `engine` more keys of the `[engine]` section (which
    replace ENGINE_DEFAULTS of the same name)."""
    given = tomllib.loads(engine)
    defaults = "\n".join(f"{k} = {v}" for k, v in ENGINE_DEFAULTS.items() if k not in given)
    path = directory / "config.toml"
    path.write_text(
        f"""{extra}
[engine]
{defaults}
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
