"""The S3 backend: keys are objects in an S3-compatible bucket, under `[storage.s3]
prefix`, through obstore (one Rust client, async, no botocore).

Credentials and the region come from the environment as AWS tools read them
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION), never from
the config file, so they are never in it nor in a log line that prints it. The engine
still reads and writes local files: a batch's inputs are downloaded into a folder of
their own in the spool (two engines on one host never remove each other's), and the
images the engine writes are uploaded, then removed from the spool.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import obstore
from obstore.store import S3Store

from ..config import S3Config
from . import Blob

if TYPE_CHECKING:
    from obstore.store import S3Config as S3Options

# Staged inputs live here in the spool, one folder per batch.
STAGED = "staged"


class S3Blobs:
    def __init__(self, config: S3Config, spool: Path) -> None:
        options: S3Options = {}
        if config.endpoint:
            options["endpoint"] = config.endpoint
        if config.region:
            options["region"] = config.region
        self._store = S3Store(
            config.bucket,
            prefix=config.prefix.strip("/") or None,
            config=options,
            # A local MinIO (or the tests' server) speaks plain HTTP.
            client_options={"allow_http": (config.endpoint or "").startswith("http:")},
        )
        self._spool = spool

    @property
    def spool(self) -> Path:
        return self._spool

    async def put(self, key: str, data: bytes) -> None:
        await obstore.put_async(self._store, key, data)

    async def read(self, key: str) -> bytes | None:
        try:
            got = await obstore.get_async(self._store, key)
        except FileNotFoundError:
            return None
        return bytes(await got.bytes_async())

    async def exists(self, key: str) -> bool:
        try:
            await obstore.head_async(self._store, key)
        except FileNotFoundError:
            return False
        return True

    async def delete(self, keys: Iterable[str]) -> None:
        wanted = list(dict.fromkeys(keys))
        if wanted:  # one DeleteObjects request per thousand keys
            await obstore.delete_async(self._store, wanted)

    async def delete_under(self, folder: str) -> None:
        await self.delete(blob.key for blob in await self.listing(folder))

    async def listing(self, folder: str) -> list[Blob]:
        found: list[Blob] = []
        async for chunk in obstore.list(self._store, folder.rstrip("/") + "/"):
            found.extend(Blob(meta["path"], meta["last_modified"]) for meta in chunk)
        return found

    async def stage(self, batch: str, keys: Iterable[str]) -> Path:
        root = self._spool / STAGED / batch
        for key in dict.fromkeys(keys):
            data = await self.read(key)
            if data is not None:  # a missing input fails in the engine, as on disk
                await asyncio.to_thread(_write, root / key, data)
        return root

    async def unstage(self, batch: str) -> None:
        await asyncio.to_thread(shutil.rmtree, self._spool / STAGED / batch, ignore_errors=True)

    async def publish(self, keys: Iterable[str]) -> None:
        for key in dict.fromkeys(keys):
            path = self._spool / key
            await obstore.put_async(self._store, key, path)
            await asyncio.to_thread(_remove, path)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty, or already gone
        path.parent.rmdir()
