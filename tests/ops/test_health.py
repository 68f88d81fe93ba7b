"""/healthz on the metrics port: it reads the database heartbeat and writes nothing."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from bot.ops.service import Operations
from tests.http.test_serve import free_port
from tests.stores import open_stores, writes_to


async def test_many_healthz_calls_make_no_database_write(tmp_path: Path) -> None:
    port = free_port()
    metrics = f"[metrics]\nenabled = true\nport = {port}\n"
    async with open_stores(tmp_path, metrics) as stores:
        ops = Operations(stores.config, stores.sessions, engines=[])
        await ops.start()
        try:
            async with aiohttp.ClientSession() as client:
                with writes_to(stores.sessions) as written:
                    for _ in range(25):
                        async with client.get(f"http://127.0.0.1:{port}/healthz") as response:
                            report = await response.json()
        finally:
            await ops.stop()
    assert written == []
    assert report["checks"]["database"] == {"ok": True, "detail": "writable"}
    # Discord is not connected in this test: the one failing check.
    assert (response.status, report["failing"]) == (503, ["discord"])
