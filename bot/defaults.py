"""The built-in defaults: what `atelier run` uses with no config file, and what
`atelier init` writes out as a commented config.toml.

Both come from the same place (the pydantic models of bot.config plus the few
choices below), so a written config.toml and no config at all run the same bot.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from datetime import date
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from engine.protocol import ModelSpec

from .config import Config, ConfigError, config_from_dict, looks_local

CONFIG_FILE = "config.toml"
# Stable Diffusion 1.5 in diffusers format: about 4.3 GB downloaded on first use
# (fp32 safetensors: UNet 3.4 GB, text encoder 0.5 GB, VAE 0.3 GB; its 1.2 GB safety
# checker is never fetched: engine.safety's classifier replaces it).
DEFAULT_MODEL_SOURCE = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_MODEL_NAME = "sd15"
_NAME = re.compile(r"[^a-z0-9_-]+")
ENDPOINT_KEYS = ("api_base", "gateway_url")


def model_name_of(source: str) -> str:
    """A short model name members can type, from a repo id or a path: "models/tiny" -> "tiny"."""
    if source == DEFAULT_MODEL_SOURCE:
        return DEFAULT_MODEL_NAME
    stem = Path(source.rstrip("/")).name
    for suffix in (".safetensors", ".ckpt"):
        stem = stem.removesuffix(suffix)
    return _NAME.sub("-", stem.lower()).strip("-") or "default"


def builtin_raw(model: str | None = None, device: str = "cpu") -> dict[str, Any]:
    """The defaults as a TOML-shaped dict: one engine on `device`, one model."""
    source = model or DEFAULT_MODEL_SOURCE
    name = model_name_of(source)
    return {
        "engine": {"devices": [device], "default_model": name},
        "models": {name: {"source": source}},
    }


def builtin_config(
    model: str | None, device: str, base: Path, env: Mapping[str, str] | None = None
) -> Config:
    """The built-in defaults; a local `model` path is relative to `base` (the working folder).

    With no file to put them in, Discord's endpoints may come from the environment
    (ATELIER_DISCORD_API_BASE, ATELIER_DISCORD_GATEWAY_URL): tests and proxies.
    """
    raw = builtin_raw(model, device)
    env = os.environ if env is None else env
    endpoints = {
        key: env[f"ATELIER_DISCORD_{key.upper()}"]
        for key in ENDPOINT_KEYS
        if f"ATELIER_DISCORD_{key.upper()}" in env
    }
    if endpoints:
        raw["discord"] = endpoints
    return config_from_dict(raw, base, "built-in defaults")


def with_default_model(config: Config, source: str, base: Path) -> Config:
    """`config` with `source` (a configured model's name, a repo id or a path) as the default."""
    if source in config.models:
        name = source
        models = config.models
    else:
        name = model_name_of(source)
        if name in config.models and config.models[name].source != source:
            name = f"{name}-cli"
        resolved = (
            str((base / Path(source).expanduser()).resolve()) if looks_local(source) else (source)
        )
        if looks_local(source) and not Path(resolved).exists():
            raise ConfigError(f"--model: {source!r} does not exist ({resolved})")
        models = {**config.models, name: ModelSpec(source=resolved)}
    engine = config.engine.model_copy(update={"default_model": name})
    return config.model_copy(update={"models": models, "engine": engine})


def with_device(config: Config, device: str) -> Config:
    return config.model_copy(
        update={"engine": config.engine.model_copy(update={"devices": [device]})}
    )


# -- atelier init: the defaults as a commented TOML file ----------------------------------

HEADER = """\
# Atelier configuration, written by `atelier init` on {day}.
# Every key is shown with its value; a commented-out key is unset. README.md
# ("Configuration keys") and config.example.toml explain each in more detail.
# Relative paths are relative to this file's folder. The bot token is never
# stored here: it comes from {token}.
"""


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path | Enum):
        return json.dumps(
            str(value.value if isinstance(value, Enum) else value), ensure_ascii=False
        )
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key} = {toml_value(v)}" for key, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {value!r}")


def _keys(section: BaseModel) -> Iterator[str]:
    for key, field in type(section).model_fields.items():
        value = getattr(section, key)
        if isinstance(value, dict) and not value:
            continue
        if field.description:
            yield f"# {field.description}"
        if value is None:
            yield f"# {key} ="
        else:
            yield f"{key} = {toml_value(value)}"


def render_config(config: Config, token_source: str) -> str:
    """`config` as commented TOML that loads back to the same values."""
    lines = [HEADER.format(day=date.today().isoformat(), token=token_source)]
    for key, field in Config.model_fields.items():
        value = getattr(config, key)
        if isinstance(value, BaseModel):
            lines.append(f"[{key}]")
            if field.description:
                lines.append(f"# {field.description}")
            lines.extend(_keys(value))
            lines.append("")
    for name, spec in config.models.items():
        lines.append(
            "# A model members pick by name; source: a Hugging Face repo id, a folder"
            " or a .safetensors file."
        )
        lines.append(f"[models.{name}]")
        lines.extend(_keys(spec))
        lines.append("")
    lines.append(
        "# Styles: `--style <name>` in a prompt; {prompt} stands for the member's prompt.\n"
        '# [styles.cinematic]\n# prompt = "cinematic still of {prompt}, film grain"\n'
    )
    return "\n".join(lines)
