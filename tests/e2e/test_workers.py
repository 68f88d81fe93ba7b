"""Several GPU hosts on PostgreSQL: a front door (`atelier run` with `[engine] devices =
[]`) takes /imagine from the local Discord server, and `atelier worker` processes (CPU
"GPUs", the tiny model) run the jobs; a worker killed mid-job loses its lease and the job
runs once more on another worker."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from .conftest import REPO, Launch, RunningBot
from .test_lifecycle import imagine

pytestmark = [pytest.mark.postgresql_only, pytest.mark.timeout(900)]

# A short lease, so a killed worker's job comes back within seconds.
LEASE_SECONDS = 3
FRONT_DOOR = f"[worker]\nlease_seconds = {LEASE_SECONDS}\n"


@dataclass
class RunningWorker:
    """`atelier worker` on the front door's database and data folder (another host's
    worker would share them through PostgreSQL and the blob store)."""

    config: Path
    log: Path
    fault: str = ""  # the engine's ATELIER_ENGINE_FAULT
    process: asyncio.subprocess.Process | None = None
    command: str = "worker"  # or "serve", an HTTP front door
    ready: str = "serving tiny on cpu"  # the log line that says it started

    async def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO), ATELIER_ENGINE_FAULT=self.fault)
        env.pop("DISCORD_TOKEN", None)  # a worker needs no Discord credential
        with self.log.open("ab") as sink:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot.cli",
                self.command,
                "--config",
                str(self.config),
                cwd=REPO,
                env=env,
                stdout=sink,
                stderr=sink,
            )
        for _ in range(480):  # 2 minutes: several may start at once
            if self.ready in self.log.read_text(errors="replace"):
                return
            assert self.process.returncode is None, self.log.read_text(errors="replace")
            await asyncio.sleep(0.25)
        raise AssertionError(f"the worker did not start: {self.log.read_text()}")

    @property
    def worker_id(self) -> str:
        """The id its claims write in jobs.claimed_by, as its start logs it."""
        found = re.search(r"worker (\S+): serving", self.log.read_text(errors="replace"))
        assert found is not None, self.log.read_text(errors="replace")
        return found.group(1)

    async def kill(self) -> None:
        """SIGKILL, as a host's crash would; its engine (a child left hanging) goes too."""
        assert self.process is not None
        children = psutil.Process(self.process.pid).children(recursive=True)
        self.process.kill()
        await self.process.wait()
        for child in children:
            child.kill()

    async def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), 60)


def worker_config(bot: RunningBot, name: str) -> Path:
    """The front door's config with one CPU engine: same database, models and data."""
    text = bot.config.read_text().replace("devices = []", 'devices = ["cpu"]')
    path = bot.config.with_name(f"{name}.toml")
    path.write_text(text)
    return path


async def job_row(bot: RunningBot, job_id: str, **expected: object) -> dict[str, object]:
    """The job's row once its columns hold `expected` (polled for 4 minutes)."""
    for _ in range(240 * 4):
        row = bot.job_row(job_id)
        if all(row[key] == value for key, value in expected.items()):
            return row
        await asyncio.sleep(0.25)
    raise AssertionError(f"job {job_id} never reached {expected}: {bot.job_row(job_id)}")


async def test_jobs_run_on_workers_and_a_killed_workers_job_runs_again_elsewhere(
    launch_bot: Launch, tmp_path: Path
) -> None:
    front = await launch_bot(engine="devices = []", extra=FRONT_DOOR)
    # The first worker's engine holds any job asked to be "retried" at its second step.
    first = RunningWorker(
        worker_config(front, "first"), tmp_path / "first.log", "hang_at_step=2@retried"
    )
    await first.start()
    second: RunningWorker | None = None
    try:
        await imagine(front, "a plain fox", seed=1)
        (plain,) = await front.wait_for_rows("select id from jobs")
        done = await job_row(front, str(plain["id"]), state="succeeded")
        first_id = done["claimed_by"]
        assert isinstance(first_id, str) and done["device"] == "cpu"
        assert done["attempts"] == 1 and done["lease_until"] is None

        await imagine(front, "retried fox", seed=2)
        (cut,) = await front.wait_for_rows("select id from jobs where id != :id", id=plain["id"])
        job_id = str(cut["id"])
        await job_row(front, job_id, state="running", claimed_by=first_id)
        await first.kill()  # mid-job: its lease is no longer renewed

        second = RunningWorker(worker_config(front, "second"), tmp_path / "second.log")
        await second.start()
        retried = await job_row(front, job_id, state="succeeded")
        assert retried["attempts"] == 2  # the killed run counted, retried once
        assert retried["claimed_by"] not in (None, first_id)
        trail = front.rows(
            "select action, outcome, params from audit_log where target = :id order by id",
            id=job_id,
        )
        requeued = [e for e in trail if e["outcome"] == "requeued"]
        assert len(requeued) == 1 and str(first_id) in str(requeued[0]["params"])
        # Charged once, for the run that finished.
        charged = front.rows("select job_id from usage_ledger where job_id = :id", id=job_id)
        assert len(charged) == 1
    finally:
        if first.process is not None and first.process.returncode is None:
            await first.kill()
        if second is not None:
            assert await second.stop() == 0, second.log.read_text(errors="replace")
            logged = second.log.read_text(errors="replace")
            assert "Traceback" not in logged, logged
