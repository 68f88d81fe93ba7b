"""The health check behind /healthz: engines alive, database writable, disk free,
Discord connected. Each check says what is wrong in words an admin can act on.

The database check reads the heartbeat a timer writes (bot.store.health): a call
to /healthz writes nothing.

An engine that has not started yet is healthy (engines start with the first
job); one whose process ended, or that does not answer a status request, is
not, until the next job starts it again.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..jobs.engine_client import EngineProcess
from ..store.health import DatabaseHeartbeat

GB = 1e9


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Health:
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failing(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    def as_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "failing": [check.name for check in self.failing],
            "checks": {
                check.name: {"ok": check.ok, "detail": check.detail} for check in self.checks
            },
        }


def free_bytes(folder: Path) -> int:
    """Free bytes on the disk holding `folder` (or its nearest existing parent)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


async def engine_check(engine: EngineProcess) -> Check:
    name = f"engine {engine.device}"
    status = await engine.status() if engine.alive else None
    if status is None and not engine.alive:  # also when it died while we asked
        if engine.starts == 0:
            return Check(name, True, "not started yet (it starts with the first job)")
        return Check(
            name,
            False,
            f"the engine process exited (code {engine.exit_code}); it restarts"
            " with the next job, and its log lines above say why",
        )
    if status is None:
        return Check(name, False, "the engine process runs but does not answer (hung?)")
    models = ", ".join(model.name for model in status.loaded) or "no model loaded yet"
    return Check(name, True, f"running ({models})")


class HealthCheck:
    def __init__(
        self,
        engines: Sequence[EngineProcess],
        heartbeat: DatabaseHeartbeat,
        data_dir: Path,
        min_free_gb: float,
        discord_connected: Callable[[], bool],
    ) -> None:
        self._engines = list(engines)
        self._heartbeat = heartbeat
        self._data_dir = data_dir
        self._min_free_gb = min_free_gb
        self._discord_connected = discord_connected

    async def run(self) -> Health:
        engines = await asyncio.gather(*(engine_check(engine) for engine in self._engines))
        return Health([*engines, await self.database(), self.disk(), self.discord()])

    async def database(self) -> Check:
        health = await self._heartbeat.health()
        return Check("database", health.writable, health.detail)

    def disk(self) -> Check:
        free = free_bytes(self._data_dir) / GB
        detail = f"{free:.1f} GB free in {self._data_dir} (minimum {self._min_free_gb:g} GB)"
        return Check("disk", free >= self._min_free_gb, detail)

    def discord(self) -> Check:
        if self._discord_connected():
            return Check("discord", True, "connected")
        return Check("discord", False, "not connected to the Discord gateway")
