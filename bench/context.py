"""What the items of one run share: its sizes, a scratch folder, the tiny models, one bot."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .botrun import BotSession, Startup


@dataclass(frozen=True)
class Sizes:
    """How much each item does; `smoke` makes every number tiny."""

    overhead_jobs: int
    steps: int
    batching_rounds: int
    batching_jobs: int
    batching_members: int
    preview_rounds: int
    preview_steps: int
    preview_side: int
    queued_jobs: int
    scheduler_waiting: int
    scheduler_members: int
    scheduler_seconds: float
    history_jobs: int
    store_ops: int
    gpu_rounds: int
    scale_jobs: int
    scale_seconds: float
    cache_rounds: int

    @classmethod
    def full(cls) -> Sizes:
        return cls(
            overhead_jobs=20,
            steps=4,
            batching_rounds=3,
            batching_jobs=8,
            batching_members=4,
            preview_rounds=8,
            preview_steps=20,
            preview_side=64,
            queued_jobs=1000,
            scheduler_waiting=1000,
            scheduler_members=100,
            scheduler_seconds=2.0,
            history_jobs=100_000,
            store_ops=200,
            gpu_rounds=3,
            scale_jobs=10_000,
            scale_seconds=5.0,
            cache_rounds=10,
        )

    @classmethod
    def smoke(cls) -> Sizes:
        return cls(
            overhead_jobs=2,
            steps=2,
            batching_rounds=1,
            batching_jobs=4,
            batching_members=2,
            preview_rounds=1,
            preview_steps=5,
            preview_side=64,
            queued_jobs=20,
            scheduler_waiting=50,
            scheduler_members=5,
            scheduler_seconds=0.05,
            history_jobs=500,
            store_ops=5,
            gpu_rounds=1,
            scale_jobs=20,
            scale_seconds=0.3,
            cache_rounds=2,
        )


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Options:
    """The command line's choices the items read."""

    smoke: bool
    gpu_models: tuple[str, ...]
    gpu_compile: bool
    gpu_compile_mode: str
    gpu_batches: tuple[int, ...]
    peak_tflops: float | None


class Context:
    def __init__(self, workdir: Path, sizes: Sizes, options: Options) -> None:
        self.workdir = workdir
        self.sizes = sizes
        self.options = options
        self._models: dict[str, Path] | None = None
        self._bot: BotSession | None = None

    @property
    def smoke(self) -> bool:
        return self.options.smoke

    def folder(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def models(self) -> dict[str, Path]:
        """The tiny model set (engine.tiny), written once per run."""
        if self._models is None:
            from engine.tiny import write_tiny_set

            say("writing the tiny models")
            self._models = write_tiny_set(self.folder("models"))
        return self._models

    async def bot(self) -> tuple[BotSession, Startup]:
        """The bot process, started on first use (its start-up is measured then)."""
        if self._bot is None:
            model = self.models["sd15"]
            say("starting the bot against the local Discord server")
            self._bot = BotSession(self.folder("bot"), model, self.sizes.steps)
            await self._bot.start()
        assert self._bot.startup is not None
        return self._bot, self._bot.startup

    async def close_bot(self) -> None:
        if self._bot is not None:
            code = await self._bot.stop()
            if code not in (0, None):
                say(f"the bot exited with code {code}; its log: {self._bot.log}")
            self._bot = None

    async def close(self) -> None:
        await self.close_bot()
