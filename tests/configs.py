"""Config files for tests: the tiny model, on the CPU, small and fast."""

from __future__ import annotations

import tomllib
from pathlib import Path

# The [engine] keys every test config has, unless its `engine` keys say otherwise.
ENGINE_DEFAULTS = {"devices": '["cpu"]', "default_model": '"tiny"', "job_timeout": "120"}


def write_config(
    directory: Path,
    model_dir: Path,
    extra: str = "",
    steps: int = 3,
    engine: str = "",
    model: str = "",
) -> Path:
    """`directory`/config.toml serving `model_dir` as "tiny"; data goes to `directory`/data.

    `extra` holds whole sections; `engine` more keys of the `[engine]` section (which
    replace ENGINE_DEFAULTS of the same name); `model` more keys of `[models.tiny]`."""
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
{model}
"""
    )
    return path


# The tiny LoRA's name in configs, and the word it adds to a prompt that lacks it.
TINY_LORA, TINY_LORA_TRIGGER = "ink", "ink wash"


def lora_toml(lora: Path) -> tuple[str, str]:
    """The tiny LoRA (engine.tiny.write_tiny_lora's folder) as `[loras.ink]` (a section
    for `extra`) and as the tiny model's draft LoRA (a key for `model`): one file serves
    both, the engine loads each under its own adapter name."""
    section = f"""
[loras.{TINY_LORA}]
source = "{lora}"
family = "sd"
weight = 0.8
triggers = ["{TINY_LORA_TRIGGER}"]
"""
    return section, f'draft_lora = "{lora}"'
