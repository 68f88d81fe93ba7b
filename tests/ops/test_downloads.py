"""The log follows a model's first download from the Hugging Face Hub."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.ops.downloads import DownloadWatch, hub_cache, repo_folder
from engine.protocol import ModelSpec

REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"


async def test_a_download_is_announced_followed_and_reported_done(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "bot.ops.downloads")
    models = {"sd15": ModelSpec(source=REPO), "local": ModelSpec(source=str(tmp_path))}
    watch = DownloadWatch(models, cache=tmp_path, interval=3600)
    watch.start()
    try:
        assert "is not downloaded yet" in caplog.text and "local" not in caplog.text
        blobs = repo_folder(tmp_path, REPO) / "blobs"
        blobs.mkdir(parents=True)
        (blobs / "aa.incomplete").write_bytes(b"x" * 1000)
        await watch.check()
        assert "downloading stable-diffusion-v1-5/stable-diffusion-v1-5: 0.00 GB so far" in (
            caplog.text
        )
        (blobs / "aa.incomplete").rename(blobs / "aa")
        await watch.check()  # the same size, no partial file: done
        assert f"model {REPO} is downloaded" in caplog.text
    finally:
        await watch.stop()


def test_the_cache_is_where_huggingface_hub_puts_it() -> None:
    assert hub_cache({"HF_HUB_CACHE": "/c"}) == Path("/c")
    assert hub_cache({"HF_HOME": "/h"}) == Path("/h/hub")
