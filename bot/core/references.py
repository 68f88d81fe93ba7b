"""Style references and blends: the results a request names as reference images
(`--sref 123`, `123/2`, a link to a result), found for the member and saved as the
request's inputs.

A member takes after their own results and public ones (shown in a channel: not a
private reply, not an HTTP job). Another member's private result, one withheld or flagged
by moderation, one that failed and an unknown one are refused with the same sentence, so
the refusal tells nothing about other members' jobs. Each image found is copied into an
inputs folder of its own, as an upload is, so the job reads its own copy however the
source job is deleted later.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from ..blobs import INPUTS, Blobs, key_of
from ..jobs.spec import BadInput, InputImage, Inputs
from ..store.jobs import JobNotFound, JobStore
from ..store.models import Job, JobState

if TYPE_CHECKING:  # the door imports this module
    from .door import InputSource


@dataclass(frozen=True)
class Pointer:
    """One image of a job: the job's id and the image's number, from 1."""

    job_id: str
    number: int


@dataclass(frozen=True)
class Found:
    """A result image a request may take after, as stored."""

    word: str  # as the member wrote it, for a refusal
    key: str
    width: int
    height: int


# A job id (10 hex digits today; any short word of letters and digits reads) and, after a
# slash, the image's number.
_JOB = re.compile(r"([0-9A-Za-z]{1,16})(?:/([0-9]{1,2}))?")
# A result's file name on Discord (bot.render.image_filename), so its CDN link names it.
_RESULT_FILE = re.compile(r"atelier-([0-9A-Za-z]{1,16})-([0-9]{1,2})\.png")
# The HTTP API's link to a job (its Location), `?image=2` for another image than the first.
_JOB_PATH = re.compile(r"/v1/jobs/([0-9A-Za-z]{1,16})/?")


def unknown(word: str) -> str:
    return (
        f"I know no result `{word}` to take after: give the id of one of your jobs or of a"
        " public result (`123`, or `123/2` for its image 2), its link, or attach the image."
    )


def pointer_of(word: str) -> Pointer:
    """The job image a reference names: `<job>`, `<job>/<n>`, the link of a result's image
    on Discord, or the HTTP API's link of a job (`?image=<n>`); BadInput otherwise."""
    if (match := _JOB.fullmatch(word)) is not None:
        return Pointer(match[1], int(match[2] or 1))
    url = urlsplit(word)
    if url.scheme in ("http", "https"):
        name = url.path.rpartition("/")[2]
        if (match := _RESULT_FILE.fullmatch(name)) is not None:
            return Pointer(match[1], int(match[2]))
        if (match := _JOB_PATH.fullmatch(url.path)) is not None:
            image = parse_qs(url.query).get("image", ["1"])[0]
            if image.isascii() and image.isdigit():
                return Pointer(match[1], int(image))
    raise BadInput(unknown(word))


def _may_take_after(job: Job, number: int, user_id: int) -> bool:
    """Whether `user_id` may use image `number` of `job` as a reference."""
    if job.state is not JobState.SUCCEEDED or not 1 <= number <= len(job.outputs):
        return False
    if job.outputs[number - 1].flags:  # flagged by the image filter or an admin
        return False
    return job.user_id == user_id or (job.user_id >= 0 and job.channel_id is not None)


class ReferenceFinder:
    """Finds the results a request names, for its member (the door's)."""

    def __init__(self, store: JobStore, blobs: Blobs) -> None:
        self._store = store
        self._blobs = blobs

    async def find(self, user_id: int, words: Sequence[str]) -> tuple[Found, ...]:
        """Each word's image, in order; BadInput for the first the member may not use."""
        found = []
        for word in words:
            pointer = pointer_of(word)
            try:
                job = await self._store.get(pointer.job_id)
            except JobNotFound:
                raise BadInput(unknown(word)) from None
            if not _may_take_after(job, pointer.number, user_id):
                raise BadInput(unknown(word))
            output = job.outputs[pointer.number - 1]
            found.append(Found(word, output.path, output.width, output.height))
        return tuple(found)

    def joined(self, inputs: InputSource, found: Sequence[Found]) -> Referenced:
        return Referenced(inputs, tuple(found), self._blobs)


class Referenced:
    """A request's own images (`inputs`) with the results it names after them as its
    reference images: an InputSource (bot.core.door)."""

    def __init__(self, inputs: InputSource, found: tuple[Found, ...], blobs: Blobs) -> None:
        self._inputs = inputs
        self._found = found
        self._blobs = blobs
        self._folder: Path | None = None

    def declared(self) -> Inputs:
        inputs = self._inputs.declared()
        named = tuple(InputImage("", found.width, found.height) for found in self._found)
        return dataclasses.replace(inputs, references=inputs.references + named)

    async def save(self) -> Inputs:
        inputs = await self._inputs.save()
        if not self._found:
            return inputs
        spool = self._blobs.spool
        self._folder = spool / INPUTS / secrets.token_hex(8)
        copies = []
        for number, found in enumerate(self._found, 1):
            data = await self._blobs.read(found.key)
            if data is None:  # deleted since it was found
                raise BadInput(unknown(found.word))
            path = self._folder / f"reference-{number}.png"
            await asyncio.to_thread(_write, path, data)
            copies.append(InputImage(key_of(spool, path), found.width, found.height))
        return dataclasses.replace(inputs, references=inputs.references + tuple(copies))

    async def discard(self) -> None:
        await self._inputs.discard()
        if self._folder is not None:
            await asyncio.to_thread(shutil.rmtree, self._folder, True)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
