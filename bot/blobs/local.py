"""The local backend: every key is a file under the data folder, which is also the
engine's spool, so staging and publishing do nothing."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from . import Blob


class LocalBlobs:
    def __init__(self, root: Path) -> None:
        self._root = root

    @property
    def spool(self) -> Path:
        return self._root

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, key, data)

    async def read(self, key: str) -> bytes | None:
        try:
            return await asyncio.to_thread((self._root / key).read_bytes)
        except OSError:
            return None

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread((self._root / key).is_file)

    async def delete(self, keys: Iterable[str]) -> None:
        await asyncio.to_thread(self._delete, list(keys))

    async def delete_under(self, folder: str) -> None:
        await asyncio.to_thread(shutil.rmtree, self._root / folder, ignore_errors=True)

    async def listing(self, folder: str) -> list[Blob]:
        return await asyncio.to_thread(self._listing, folder)

    async def stage(self, batch: str, keys: Iterable[str]) -> Path:
        return self._root

    async def unstage(self, batch: str) -> None:
        return None

    async def publish(self, keys: Iterable[str]) -> None:
        return None

    def _put(self, key: str, data: bytes) -> None:
        path = self._root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written beside it, then renamed over it: a reader in another process (a front
        # door showing a preview the worker overwrites) sees the old file or the new
        # one, never half of one.
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
        try:
            partial.write_bytes(data)
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)

    def _delete(self, keys: list[str]) -> None:
        for key in keys:
            path = self._root / key
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # not empty, or already gone
                path.parent.rmdir()

    def _listing(self, folder: str) -> list[Blob]:
        found = []
        for path in (self._root / folder).rglob("*"):
            with contextlib.suppress(FileNotFoundError):  # deleted while listed
                if path.is_file():
                    modified = datetime.fromtimestamp(path.stat().st_mtime, UTC)
                    found.append(Blob(path.relative_to(self._root).as_posix(), modified))
        return found
