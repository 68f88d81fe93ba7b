"""Weights by their bytes: the identity of a LoRA's local file or folder.

A source that is a local file or folder is named by the sha256 of what is in it, so
that replacing the file (or the `[loras.<name>] source` with another file) shows as
another identity; any other source (a Hugging Face repo id) is named by itself. Each
file is hashed once per (path, size, mtime): a LoRA used again costs a stat.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

_CHUNK = 1 << 20


class WeightHashes:
    """Sources' identities, each file's hash kept while its size and mtime stay."""

    def __init__(self) -> None:
        self._files: dict[tuple[str, int, int], str] = {}

    async def identity(self, source: str) -> str:
        """The source's identity; read in a thread (hashing a LoRA takes a while)."""
        return await asyncio.to_thread(self._identity, source)

    def _identity(self, source: str) -> str:
        path = Path(source)
        if path.is_file():
            return f"sha256:{self._file(path)}"
        if path.is_dir():
            # A folder's identity: each file's name in it and its bytes, in name order.
            listing = sorted(
                (str(file.relative_to(path)), self._file(file))
                for file in path.rglob("*")
                if file.is_file()
            )
            digest = hashlib.sha256(repr(listing).encode())
            return f"sha256:{digest.hexdigest()}"
        return f"source:{source}"

    def _file(self, path: Path) -> str:
        stat = path.stat()
        memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        known = self._files.get(memo)
        if known is None:
            digest = hashlib.sha256()
            with path.open("rb") as file:
                while chunk := file.read(_CHUNK):
                    digest.update(chunk)
            known = self._files[memo] = digest.hexdigest()
        return known
