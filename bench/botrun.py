"""The real bot, `python -m bot.cli run`, against the local Discord-compatible server.

The same process tests/e2e drives: a gateway and REST API on 127.0.0.1
(tests/discord_server), the bot's own config file, its own SQLite database
and its engine subprocess on the CPU with the tiny model.
"""

# Waits take a timeout so that a failure can say what was awaited.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.discord_server import LocalDiscord, Message

from .report import REPO

READY_TIMEOUT = 120.0


def finished(message: Message) -> bool:
    """The final version of a job's reply: its result embed, or the failure."""
    return bool(message.embeds) or "failed" in message.content


def rss_bytes(pid: int) -> int | None:
    """Resident memory of process `pid` (Linux /proc); None where it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def loads_torch(pid: int) -> bool | None:
    """Whether process `pid` has torch's library mapped; None where it cannot tell."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None
    return "libtorch" in maps


def bot_config(directory: Path, server: LocalDiscord, model: Path, steps: int) -> Path:
    path = directory / "config.toml"
    path.write_text(
        f"""
[discord]
api_base = "{server.api_base}"
gateway_url = "{server.gateway_url}"
guild_ids = [{server.guild_id}]

[storage]
data_dir = "{directory / "data"}"

[generation]
# Previews are item 3's business; here each reply is the real path without them.
preview_every = 0

[queue]
max_length = 5000
stop_grace_seconds = 5

[quota]
jobs_queued = 1000

[moderation]
# One bench "member" sends hundreds of jobs in seconds: no rate limit here.
member_burst = 0
guild_burst = 0
# The path is measured against plain diffusers calls, which classify nothing; the
# image classifier's own cost is measured on its own (README, the image filter).
classify_images = false

[engine]
devices = ["cpu"]
default_model = "tiny"
job_timeout = 600

[models.tiny]
source = "{model}"
width = 64
height = 64
steps = {steps}
sampler = "Euler"
"""
    )
    return path


@dataclass(frozen=True)
class Imagined:
    """One /imagine through the bot, timed by the local server (`time.monotonic()`)."""

    interaction_id: int
    sent_at: float  # the interaction sent to the bot
    deferred_at: float  # the bot's deferral received
    replied_at: float  # the reply with its files stored

    @property
    def seconds(self) -> float:
        return self.replied_at - self.sent_at


@dataclass
class Startup:
    ready_seconds: float  # from spawn to READY (IDENTIFY answered)
    commands_seconds: float  # ... to the slash commands synced
    rss_idle_bytes: int | None
    torch_loaded: bool | None


class BotSession:
    """One running bot and its local Discord; `start` measures how it starts."""

    def __init__(self, directory: Path, model: Path, steps: int) -> None:
        self.directory = directory
        self.model = model
        self.steps = steps
        # Checking each request against Discord's OpenAPI spec is the tests' business;
        # here it would be ~9 ms of CPU per job on the cores the bot and engine share.
        self.server = LocalDiscord(spec_path=None)
        self.log = directory / "bot.log"
        self.process: asyncio.subprocess.Process | None = None
        self.startup: Startup | None = None

    @property
    def database(self) -> Path:
        return self.directory / "data" / "atelier.db"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> Startup:
        self.directory.mkdir(parents=True, exist_ok=True)
        await self.server.start()
        config = bot_config(self.directory, self.server, self.model, self.steps)
        # This checkout's packages first, whatever the working folder or installed copy.
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        env = dict(os.environ, DISCORD_TOKEN=self.server.bot_token, PYTHONPATH=path)
        spawned = time.monotonic()
        with self.log.open("ab") as sink:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot.cli",
                "run",
                "--config",
                str(config),
                cwd=self.directory,
                env=env,
                stdout=sink,
                stderr=sink,
            )
        await self.server.wait_for_identify(timeout=READY_TIMEOUT)
        ready = time.monotonic()
        await self.server.wait_for_commands(timeout=READY_TIMEOUT)
        commands = time.monotonic()
        await asyncio.sleep(0.5)  # let start-up allocations settle
        self.startup = Startup(
            ready_seconds=ready - spawned,
            commands_seconds=commands - spawned,
            rss_idle_bytes=rss_bytes(self.pid),
            torch_loaded=loads_torch(self.pid),
        )
        return self.startup

    async def imagine(self, prompt: str, seed: int, timeout: float = 300) -> Imagined:
        """Send /imagine and wait for the final reply with its files."""
        ix = await self.server.send_slash_command("imagine", {"prompt": prompt, "seed": seed})
        reply = await ix.wait_for_original(finished, timeout=timeout)
        if not reply.attachments:
            raise RuntimeError(f"the bot's job failed: {reply.content} (log: {self.log})")
        assert ix.callback is not None  # a reply exists, so the bot answered the interaction
        return Imagined(ix.id, ix.sent_at, ix.callback.received_at, reply.created_at)

    async def queued_reply(self, prompt: str, seed: int, timeout: float = 60) -> float:
        """Send /imagine; seconds until the reply says the job is queued."""
        ix = await self.server.send_slash_command("imagine", {"prompt": prompt, "seed": seed})
        reply = await ix.wait_for_original(lambda m: "queued" in m.content, timeout=timeout)
        return reply.created_at - ix.sent_at

    def rows(self, sql: str, **params: object) -> list[dict[str, object]]:
        engine = create_engine(f"sqlite:///{self.database}")
        try:
            with engine.connect() as connection:
                return [dict(row) for row in connection.execute(text(sql), params).mappings()]
        finally:
            engine.dispose()

    async def settled(self, interaction_id: int, timeout: float = 30) -> dict[str, object]:
        """The job's row once its delivery is recorded (written just after the reply), so
        the bot is idle again before the next measurement."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.rows(
                "select * from jobs where interaction_id = :ix and delivered_at is not null",
                ix=interaction_id,
            )
            if found:
                return found[0]
            await asyncio.sleep(0.02)
        raise TimeoutError(f"interaction {interaction_id}: no delivered job within {timeout:g} s")

    async def stop(self) -> int | None:
        code = None
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.wait_for(self.process.wait(), 60)
            except TimeoutError:
                self.process.kill()
                code = await self.process.wait()
        await self.server.stop()
        return code
