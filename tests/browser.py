"""A real headless Chromium for the tests of browser pages (the Vary (Region) editor):
the distribution's own (apt-get install chromium), driven by playwright, which never
downloads a browser of its own here."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from tests.system_packages import install_if_missing

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _ensure_chromium() -> None:
    install_if_missing("chromium", CHROMIUM.exists)
    if not CHROMIUM.exists():
        raise RuntimeError("the browser tests need Chromium: apt-get install chromium")


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[object]:
    """A headless Chromium, closed after; the distribution's package is installed first
    where it is missing (tests.system_packages)."""
    from playwright.async_api import async_playwright

    await asyncio.to_thread(_ensure_chromium)
    async with async_playwright() as driver:
        launched = await driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def drag(
    page: object, box: dict[str, float], scale: float, points: list[tuple[float, float]]
) -> None:
    """Press the mouse at the first point (image pixels), move through the others, release."""
    mouse = page.mouse  # type: ignore[attr-defined]
    at = [(box["x"] + x * scale, box["y"] + y * scale) for x, y in points]
    await mouse.move(*at[0])
    await mouse.down()
    for x, y in at[1:]:
        await mouse.move(x, y, steps=8)
    await mouse.up()
