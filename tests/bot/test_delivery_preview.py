"""A progress edit's preview, read as the engine may be removing it."""

from __future__ import annotations

from pathlib import Path

from bot.blobs.local import LocalBlobs
from bot.discord.delivery import PREVIEW_NAME, _preview_file


async def test_a_preview_is_attached_and_one_already_removed_is_left_out(tmp_path: Path) -> None:
    blobs = LocalBlobs(tmp_path)
    preview = tmp_path / "job-preview.png"
    preview.write_bytes(b"\x89PNG preview")
    for told in (str(preview), "job-preview.png"):  # the engine's file here, or a blob key
        (attached,) = await _preview_file(blobs, told)
        assert attached.filename == PREVIEW_NAME and attached.fp.read() == b"\x89PNG preview"
    preview.unlink()  # the job ended between the progress event and the edit
    assert await _preview_file(blobs, str(preview)) == []
    assert await _preview_file(blobs, "job-preview.png") == []
