"""The bot process stays free of torch; the engine stays free of Discord and SQL.

import-linter checks the static imports (scripts/check); this checks what a
real start actually loads, lazy imports included.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def loaded_modules(code: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    return {name.split(".")[0] for name in done.stdout.split()}


def test_bot_loads_no_torch_diffusers_or_transformers() -> None:
    loaded = loaded_modules(
        "import bot.app, bot.cli, bot.generate, bot.discord.bot, bot.store.migrate"
    )
    assert "discord" in loaded
    assert not loaded & {"torch", "diffusers", "transformers", "safetensors"}


def test_engine_loads_no_discord_or_sqlalchemy() -> None:
    loaded = loaded_modules("import engine.worker, engine.pipelines, engine.models")
    assert "torch" in loaded
    assert not loaded & {"discord", "sqlalchemy", "aiosqlite", "alembic", "bot"}


def test_a_gpu_hosts_worker_loads_no_discord() -> None:
    # `atelier worker` (bot.cli -> bot.worker -> bot.wiring): no Discord, no HTTP door.
    loaded = loaded_modules("import bot.cli, bot.worker, bot.wiring, bot.jobs.reaper")
    assert "sqlalchemy" in loaded
    assert not loaded & {"discord", "torch", "diffusers"}
