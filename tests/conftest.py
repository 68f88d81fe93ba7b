"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Under pytest-xdist every worker, and each engine it spawns, would start a torch
# thread per core: on a 2-core machine two workers' threads then contend, and the
# tiny models ran up to 15x slower than alone. One core's worth of threads each.
if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))


# Tests that each start bot and engine processes, first: with `--dist worksteal` the
# worker that finishes the quick ones takes half of the other's remaining long ones,
# instead of one worker starting a long test after the other has run out.
SLOW_FIRST = (
    "tests/e2e/",
    "tests/bench/",
    "tests/bot/test_cli.py",
    "tests/bot/test_job_service.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not item.nodeid.startswith(SLOW_FIRST))


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
