"""A progress edit's preview, read as the engine may be removing it."""

from __future__ import annotations

from pathlib import Path

from bot.discord.delivery import PREVIEW_NAME, _preview_file


async def test_a_preview_is_attached_and_one_already_removed_is_left_out(tmp_path: Path) -> None:
    preview = tmp_path / "job-preview.png"
    preview.write_bytes(b"\x89PNG preview")
    (attached,) = await _preview_file(preview)
    assert attached.filename == PREVIEW_NAME and attached.fp.read() == b"\x89PNG preview"
    preview.unlink()  # the job ended between the progress event and the edit
    assert await _preview_file(preview) == []
