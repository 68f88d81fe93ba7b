"""The blob store: where images and members' uploads are kept, by key.

A key is a POSIX path inside the store: `images/<job id>/<file>` for a job's results,
`inputs/<name>/<role>.png` for an upload. Jobs and output rows hold keys, never local
paths, so every process reads them the same whatever the backend:

- `local` (the default): the keys are files under `[storage] data_dir`;
- `s3`: objects in an S3-compatible bucket (bot.blobs.s3).

Whatever the backend, the engine reads and writes plain files in the *spool*, the
local data folder: the worker pool `stage`s a batch's inputs there before the engine
runs it and `publish`es the images the engine wrote (uploading them and removing the
local copies). With the local backend the spool is the store, and both are free.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Protocol

from ..config import StorageConfig

IMAGES = "images"
INPUTS = "inputs"


@dataclass(frozen=True)
class Blob:
    key: str
    modified: datetime  # timezone-aware, UTC


class Blobs(Protocol):
    @property
    def spool(self) -> Path:
        """The local folder the engine reads inputs from and writes images into."""
        ...

    async def put(self, key: str, data: bytes) -> None: ...

    async def read(self, key: str) -> bytes | None:
        """The blob's bytes; None when it is not stored."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, keys: Iterable[str]) -> None:
        """Delete these blobs (a missing one is no error)."""
        ...

    async def delete_under(self, folder: str) -> None:
        """Delete every blob whose key lies in `folder`."""
        ...

    async def listing(self, folder: str) -> list[Blob]:
        """Every blob whose key lies in `folder`, at any depth."""
        ...

    async def stage(self, batch: str, keys: Iterable[str]) -> Path:
        """Make `keys` files the engine can read, for one batch; the folder their keys
        are relative to."""
        ...

    async def unstage(self, batch: str) -> None:
        """Remove what `stage` made for `batch`."""
        ...

    async def publish(self, keys: Iterable[str]) -> None:
        """Store the spool's files at `keys` (written by the engine or a door)."""
        ...


def key_of(spool: Path, path: Path | str) -> str:
    """The key of a file in the spool."""
    return Path(path).relative_to(spool).as_posix()


def uploads_of(keys: Iterable[str]) -> list[str]:
    """Those keys that are members' uploads (not an earlier job's images, as V/U read)."""
    return [key for key in keys if PurePosixPath(key).parts[:1] == (INPUTS,)]


def job_folder(job_id: str) -> str:
    return f"{IMAGES}/{job_id}"


def parent_folder(key: str) -> str:
    """The folder a key lies in (an upload's `inputs/<name>`)."""
    return str(PurePosixPath(key).parent)


def open_blobs(storage: StorageConfig) -> Blobs:
    """The store `[storage]` names; the S3 client is imported only when configured."""
    if storage.backend == "s3":
        from .s3 import S3Blobs

        assert storage.s3 is not None  # StorageConfig requires it with backend = "s3"
        return S3Blobs(storage.s3, storage.data_dir)
    from .local import LocalBlobs

    return LocalBlobs(storage.data_dir)
