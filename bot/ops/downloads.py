"""A progress line in the log while a model downloads from the Hugging Face Hub.

A model given as a repo id is downloaded by diffusers, in the engine, with the
first job that needs it, into the Hugging Face cache; the engine keeps the
libraries' progress bars off (they would garble the log). The bot watches the
cache folder instead: at start it says which models are not downloaded yet,
then, while one grows, logs how far it is every `interval` seconds, and when
it stops growing with no partial file left, that it is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from engine.protocol import ModelSpec

from ..config import looks_local

log = logging.getLogger(__name__)

INTERVAL = 10.0
GB = 1e9


def hub_cache(environment: Mapping[str, str] = os.environ) -> Path:
    """Where huggingface_hub keeps downloads (HF_HUB_CACHE, else HF_HOME/hub)."""
    if cache := environment.get("HF_HUB_CACHE"):
        return Path(cache)
    home = environment.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")
    return Path(home) / "hub"


def repo_folder(cache: Path, repo_id: str) -> Path:
    return cache / f"models--{repo_id.replace('/', '--')}"


def downloaded(cache: Path, repo_id: str) -> tuple[int, bool]:
    """(bytes in the cache so far, whether a download is under way: a partial file)."""
    blobs = repo_folder(cache, repo_id) / "blobs"
    size, partial = 0, False
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(blobs):
            with contextlib.suppress(FileNotFoundError):
                size += entry.stat().st_size
            partial = partial or entry.name.endswith(".incomplete")
    return size, partial


class DownloadWatch:
    def __init__(
        self, models: Mapping[str, ModelSpec], cache: Path | None = None, interval: float = INTERVAL
    ) -> None:
        self._repos = sorted(
            {spec.source for spec in models.values() if not looks_local(spec.source)}
        )
        self._cache = cache or hub_cache()
        self._interval = interval
        self._sizes: dict[str, int] = {}  # repos not known complete, by bytes seen
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        for repo in self._repos:
            if not repo_folder(self._cache, repo).is_dir():
                log.info(
                    "model %s is not downloaded yet: the first job that uses it downloads"
                    " it into %s (the log shows how far)",
                    repo,
                    self._cache,
                )
            elif not downloaded(self._cache, repo)[1]:
                continue  # in the cache, nothing partial: nothing to follow
            self._sizes[repo] = -1
        if self._sizes:
            self._task = asyncio.create_task(self._loop(), name="download-watch")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while self._sizes:
            await self.check()
            await asyncio.sleep(self._interval)

    async def check(self) -> None:
        for repo, before in list(self._sizes.items()):
            size, partial = await asyncio.to_thread(downloaded, self._cache, repo)
            if partial or (size > before >= 0):
                log.info("downloading %s: %.2f GB so far", repo, size / GB)
            elif size > 0 and size == before:
                if before >= 0:
                    log.info("model %s is downloaded (%.2f GB)", repo, size / GB)
                del self._sizes[repo]
                continue
            self._sizes[repo] = size
