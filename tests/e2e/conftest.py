"""The real bot, started as `atelier run`, against the local Discord-compatible server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bot.config import load_config
from bot.store.db import open_engine
from tests.configs import lora_toml, write_config
from tests.databases import Database
from tests.discord_server import LocalDiscord

REPO = Path(__file__).resolve().parents[2]
CRASH_FAULT = "crash_at_step=2@[crash]"


@dataclass
class RunningBot:
    """`atelier run` against the local server; `restart` stops it and starts another.

    `arguments` replace `--config <config>` (a bot with no config file); `cwd` is
    where it runs (the repository by default).
    """

    server: LocalDiscord
    config: Path
    data_dir: Path
    log: Path
    process: asyncio.subprocess.Process | None = None
    starts: int = 0
    arguments: list[str] | None = None
    cwd: Path = REPO
    fault: str = CRASH_FAULT  # the engine's ATELIER_ENGINE_FAULT at the next start

    async def start(self) -> None:
        # By default only prompts containing "[crash]" make the engine die, so a test can
        # break one job.
        env = dict(
            os.environ,
            DISCORD_TOKEN=self.server.bot_token,
            ATELIER_ENGINE_FAULT=self.fault,
            PYTHONPATH=str(REPO),
        )
        self.starts += 1
        arguments = self.arguments or ["--config", str(self.config)]
        with self.log.open("ab") as sink:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot.cli",
                "run",
                *arguments,
                cwd=self.cwd,
                env=env,
                stdout=sink,
                stderr=sink,
            )
        await self.server.wait_for_identify(timeout=30, count=self.starts)
        await self.server.wait_for_commands(timeout=30)

    async def stop(self) -> int:
        """SIGTERM, as a service manager stops it; the exit code."""
        process = self.process
        assert process is not None
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
        assert process.returncode is not None
        return process.returncode

    async def restart(self) -> None:
        assert await self.stop() == 0, self.log.read_text(errors="replace")
        await self.start()

    async def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: nothing gets to clean up."""
        assert self.process is not None
        self.process.kill()
        await self.process.wait()

    def rows(self, sql: str, **params: object) -> list[dict[str, object]]:
        """Run one query against the bot's database, as another process would."""
        return self._on_database(sql, params, write=False)

    def execute(self, sql: str, **params: object) -> None:
        """Change the bot's database, as another process would (while it is down)."""
        self._on_database(sql, params, write=True)

    def _on_database(
        self, sql: str, params: dict[str, object], write: bool
    ) -> list[dict[str, object]]:
        url = load_config(self.config).database_url
        if make_url(url).get_backend_name() != "sqlite":
            # PostgreSQL's driver is asyncio only: its own loop, on a thread of its own.
            with ThreadPoolExecutor(1) as thread:
                return thread.submit(asyncio.run, _on_postgresql(url, sql, params, write)).result()
        engine = create_engine(f"sqlite:///{self.data_dir / 'atelier.db'}")
        try:
            with engine.begin() if write else engine.connect() as connection:
                found = connection.execute(text(sql), params)
                return [] if write else [dict(row) for row in found.mappings()]
        finally:
            engine.dispose()

    async def wait_for_rows(self, sql: str, **params: object) -> list[dict[str, object]]:
        """The query's rows once there are any (polled for 10 s): some rows are written
        just after the reply, and the bot is another process."""
        for _ in range(200):
            if found := self.rows(sql, **params):
                return found
            await asyncio.sleep(0.05)
        raise AssertionError(f"no rows for {sql!r} after 10 s")

    def job_row(self, job_id: str) -> dict[str, object]:
        (row,) = self.rows("select * from jobs where id = :id", id=job_id)
        return row


async def _on_postgresql(
    url: str, sql: str, params: dict[str, object], write: bool
) -> list[dict[str, object]]:
    engine = open_engine(url)
    try:
        async with engine.begin() if write else engine.connect() as connection:
            found = await connection.execute(text(sql), params)
            return [] if write else [dict(row) for row in found.mappings()]
    finally:
        await engine.dispose()


def bot_config(
    directory: Path,
    server: LocalDiscord,
    models: dict[str, Path],
    extra: str = "",
    engine: str = "",
    discord_keys: str = "",
    admin: str | None = None,
) -> Path:
    """The e2e config; `extra` holds more TOML sections (e.g. [quota], [metrics]),
    `engine` more keys of the [engine] section, `admin` the [admin] section's keys
    (default: the server's owner by id). Commands sync to each of the server's guilds."""
    if admin is None:
        admin = f"user_ids = [{server.owner_id}]"
    discord = f"""
[discord]
api_base = "{server.api_base}"
gateway_url = "{server.gateway_url}"
guild_ids = {server.guild_ids}
progress_interval = 0.2
{discord_keys}

[generation]
preview_every = 1

[billing]
price_per_gpu_hour = 3.6
currency = "EUR"

[admin]
{admin}
{extra}
"""
    config = write_config(directory, models["sd15"], extra=discord, steps=4, engine=engine)
    # The tiny model gets a scribble ControlNet, a dedicated inpainting checkpoint, an
    # IP-Adapter (--sref, /blend) and the tiny LoRA, as `ink` and as its draft LoRA.
    adapter = models["ip-adapter"]
    loras, draft = lora_toml(models["lora"])
    config.write_text(
        config.read_text()
        + f'inpaint = "{models["inpaint"]}"\n'
        + f'ip_adapter = "{adapter / "ip-adapter.safetensors"}"\n'
        + f'image_encoder = "{adapter / "image_encoder"}"\n'
        + f"{draft}\n"
        + f'[models.tiny.controlnets]\nscribble = "{models["controlnet-scribble"]}"\n'
        + loras
    )
    return config


Launch = Callable[..., Awaitable[RunningBot]]


@pytest.fixture
async def launch_bot(
    tmp_path: Path, tiny_model_set: dict[str, Path], database: Database
) -> AsyncIterator[Launch]:
    """Start `atelier run` against a fresh local server and a fresh `database`; `extra`
    config sections, `engine`, `discord` and `admin` keys and the server's options may be
    given, and the engine's `fault` (ATELIER_ENGINE_FAULT). Each bot is stopped, and its
    log checked, at the end of the test."""
    launched: list[RunningBot] = []
    databases = ExitStack()

    async def launch(
        extra: str = "",
        engine: str = "",
        discord: str = "",
        admin: str | None = None,
        fault: str = CRASH_FAULT,
        **server_options: Any,
    ) -> RunningBot:
        server = LocalDiscord(**server_options)
        await server.start()
        folder = tmp_path / f"bot{len(launched)}"
        folder.mkdir()
        extra = databases.enter_context(database.fresh()) + extra
        config = bot_config(folder, server, tiny_model_set, extra, engine, discord, admin)
        bot = RunningBot(server, config, folder / "data", folder / "bot.log", fault=fault)
        launched.append(bot)
        await bot.start()
        return bot

    with databases:
        yield launch
        for bot in launched:
            code = await bot.stop() if bot.process is not None else None
            await bot.server.stop()
            check_finished_bot(bot, code)


@pytest.fixture
async def running_bot(launch_bot: Launch) -> RunningBot:
    return await launch_bot()


def check_finished_bot(bot: RunningBot, code: int | None, json_lines: bool = False) -> None:
    """What every end-to-end bot must leave behind: a clean exit, a log with no secret
    (the bot token, any member's interaction token) and, in JSON, one object per line,
    and only valid requests to Discord."""
    server = bot.server
    logged = bot.log.read_text(errors="replace")
    print(logged)  # shown by pytest when the test fails
    assert code == 0, logged
    assert server.bot_token not in logged  # the secret never reaches a log
    for token in server.interaction_tokens:
        assert token not in logged
    # Nor a Vary (Region) editor link's token, whoever logged its address.
    assert re.search(r"/edit/(?!\[redacted\])", logged) is None
    if json_lines:
        for line in logged.splitlines():
            if line.strip():
                record = json.loads(line)
                assert {"time", "level", "logger", "message"} <= set(record), line
    assert server.schema_errors == []
    assert server.unhandled == []
