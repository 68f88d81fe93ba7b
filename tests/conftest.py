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
