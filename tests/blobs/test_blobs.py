"""Both backends keep the same contract: keys in, bytes out, folders listed and deleted,
and the engine's files staged and published through the spool."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.blobs import Blobs, open_blobs
from bot.blobs.local import LocalBlobs
from bot.config import StorageConfig
from tests.buckets import Bucket


def files_in(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


@pytest.fixture(params=["local", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Blobs]:
    spool = tmp_path / "data"
    if request.param == "local":
        yield open_blobs(StorageConfig(data_dir=spool))
    else:
        bucket: Bucket = request.getfixturevalue("bucket")
        yield open_blobs(bucket.storage(spool))


async def test_a_blob_put_is_read_back_by_its_key_and_gone_once_deleted(blobs: Blobs) -> None:
    await blobs.put("images/j1/0.png", b"first")
    assert await blobs.read("images/j1/0.png") == b"first"
    assert await blobs.exists("images/j1/0.png")
    await blobs.delete(["images/j1/0.png", "images/never/0.png"])  # a missing key is no error
    assert await blobs.read("images/j1/0.png") is None
    assert not await blobs.exists("images/j1/0.png")


async def test_a_listing_holds_the_folder_s_blobs_at_any_depth_and_nothing_else(
    blobs: Blobs,
) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    for key in ("inputs/a/image.png", "inputs/a/deep/mask.png", "inputs/ab/image.png"):
        await blobs.put(key, b"x")
    await blobs.put("images/a/0.png", b"x")
    listed = await blobs.listing("inputs/a")
    assert {blob.key for blob in listed} == {"inputs/a/image.png", "inputs/a/deep/mask.png"}
    assert all(
        before <= blob.modified <= datetime.now(UTC) + timedelta(seconds=5) for blob in listed
    )
    await blobs.delete_under("inputs/a")
    assert {blob.key for blob in await blobs.listing("inputs")} == {"inputs/ab/image.png"}


async def test_the_engine_reads_staged_inputs_and_its_published_images_are_stored(
    blobs: Blobs,
) -> None:
    await blobs.put("inputs/u/image.png", b"upload")
    root = await blobs.stage("batch-1", ["inputs/u/image.png"])
    assert (root / "inputs/u/image.png").read_bytes() == b"upload"
    written = blobs.spool / "images/j2/0.png"  # as the engine writes it
    written.parent.mkdir(parents=True)
    written.write_bytes(b"result")
    await blobs.publish(["images/j2/0.png"])
    assert await blobs.read("images/j2/0.png") == b"result"
    await blobs.unstage("batch-1")
    assert await blobs.read("inputs/u/image.png") == b"upload"


async def test_with_s3_the_spool_keeps_no_copy_of_what_was_staged_or_published(
    bucket: Bucket, tmp_path: Path
) -> None:
    blobs = open_blobs(bucket.storage(tmp_path))
    await blobs.put("inputs/u/image.png", b"upload")
    root = await blobs.stage("batch-1", ["inputs/u/image.png"])
    assert root != tmp_path  # a folder of the batch's own
    (tmp_path / "images/j3").mkdir(parents=True)
    (tmp_path / "images/j3/0.png").write_bytes(b"result")
    await blobs.publish(["images/j3/0.png"])
    await blobs.unstage("batch-1")
    assert bucket.keys() == {"inputs/u/image.png", "images/j3/0.png"}
    assert files_in(tmp_path) == []


async def test_the_local_backend_is_the_data_folder_itself(tmp_path: Path) -> None:
    blobs = LocalBlobs(tmp_path)
    await blobs.put("inputs/u/image.png", b"upload")
    assert (tmp_path / "inputs/u/image.png").read_bytes() == b"upload"
    assert await blobs.stage("batch-1", ["inputs/u/image.png"]) == tmp_path
    await blobs.delete(["inputs/u/image.png"])
    assert not (tmp_path / "inputs/u").exists()  # the folder it left empty goes too


async def test_a_local_blob_overwritten_while_read_is_read_whole(tmp_path: Path) -> None:
    """A front door reads a preview while the worker overwrites it on a shared folder."""
    blobs = LocalBlobs(tmp_path)
    versions = [bytes([n]) * 1_000_000 for n in range(1, 4)]
    await blobs.put("images/j/preview.png", versions[0])

    async def overwrite() -> None:
        for n in range(60):
            await blobs.put("images/j/preview.png", versions[n % 3])

    async def read() -> list[bytes | None]:
        return [await blobs.read("images/j/preview.png") for _ in range(120)]

    _, seen = await asyncio.gather(overwrite(), read())
    assert all(data in versions for data in seen)
    assert files_in(tmp_path) == [tmp_path / "images/j/preview.png"]  # no partial file left
