"""Discord out of reach: at start (one line, exit 1) and mid-run (SIGTERM still stops)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from pathlib import Path

from tests.discord_server import LocalDiscord

from .conftest import REPO, Launch, bot_config

GRACE = 2.0


async def long_backoff(log: Path) -> None:
    """Until discord.py says it sleeps longer than the stop may take before its next try
    (its backoff is random and doubles, so this comes within a minute or so)."""
    for _ in range(180 * 4):
        text = await asyncio.to_thread(log.read_text, errors="replace")
        waits = re.findall(r"Attempting a reconnect in ([0-9.]+)s", text)
        if waits and float(waits[-1]) > GRACE + 8:
            return
        await asyncio.sleep(0.25)
    raise AssertionError("discord.py never backed off for long")


async def test_a_bot_whose_discord_went_away_stops_within_the_grace_of_a_sigterm(
    launch_bot: Launch,
) -> None:
    bot = await launch_bot(extra=f"[queue]\nstop_grace_seconds = {GRACE}")
    await bot.server.stop()  # the gateway and REST vanish: the bot reconnects, with backoff
    await long_backoff(bot.log)
    began = time.monotonic()
    assert await bot.stop() == 0, bot.log.read_text(errors="replace")
    assert time.monotonic() - began < GRACE + 5, bot.log.read_text(errors="replace")


async def test_run_says_in_one_line_that_discord_cannot_be_reached(
    tmp_path: Path, tiny_model_set: dict[str, Path]
) -> None:
    server = LocalDiscord()
    await server.start()
    config = bot_config(tmp_path, server, tiny_model_set)
    await server.stop()  # nothing listens at api_base now: connection refused
    env = dict(os.environ, DISCORD_TOKEN=server.bot_token, PYTHONPATH=str(REPO))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "run",
        "--config",
        str(config),
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 120)
    err = stderr.decode(errors="replace")
    assert process.returncode == 1, err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("atelier:")]
    assert f"could not reach Discord at {server.api_base}" in line
    assert "connection refused" in line and "api_base" in line
    assert server.bot_token not in err
