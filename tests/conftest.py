"""Fixtures shared by every test package."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight SD 1.5 pipeline in diffusers format, built once per session."""
    # Imported here so test sessions that never ask for a model do not load torch.
    from engine.tiny import write_tiny_sd15

    return write_tiny_sd15(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def tiny_model_set(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Every tiny model by name, as `python -m engine.tiny --all DIR` lays them out.

    sd15 (the `tiny_model_dir` pipeline), sdxl, controlnet-scribble (fits sd15),
    inpaint (9-channel UNet) and taesd (preview decoder); built once per session.
    """
    from engine.tiny import TINY_SET

    root = tmp_path_factory.mktemp("tiny-set")
    return {
        name: tiny_model_dir if name == "sd15" else write(root / name)
        for name, write in TINY_SET.items()
    }
