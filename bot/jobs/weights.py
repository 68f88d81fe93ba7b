"""Weights' identities: a LoRA's by its bytes, a model's by its files' stats.

A LoRA's local file or folder is named by the sha256 of what is in it, so that
replacing the file (or the `[loras.<name>] source` with another file) shows as
another identity; each file is hashed once per (path, size, mtime): a LoRA used again
costs a stat. A model's local checkpoint (file or folder) is named by its files' names,
sizes and mtimes (`stamp`). Any other source (a Hugging Face repo id) is named by itself.
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

    async def stamp(self, source: str) -> str:
        """The source's identity by its files' stats, not their bytes; read in a thread.

        For a model's checkpoint: hashing several GB on a request would take seconds
        (and the memo by (path, size, mtime) would save nothing, since a stamp is those
        stats). A replaced file shows as another size or mtime; one copied over keeping
        both (`cp -p` of a same-sized file) does not, and is left to the checkpoint hash
        the engine records on its first run (bot.store.cache._checkpoint_of).
        """
        return await asyncio.to_thread(_stamp, source)

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


def _stamp(source: str) -> str:
    path = Path(source)
    if path.is_file():
        files = [(path.name, path)]
    elif path.is_dir():
        files = sorted((str(file.relative_to(path)), file) for file in path.rglob("*"))
    else:
        return f"source:{source}"
    # stat() follows links: a Hugging Face cache snapshot's files are links to its blobs.
    listing = []
    for name, file in files:
        if file.is_file():
            stat = file.stat()
            listing.append((name, stat.st_size, stat.st_mtime_ns))
    return f"stat:{hashlib.sha256(repr(listing).encode()).hexdigest()}"
