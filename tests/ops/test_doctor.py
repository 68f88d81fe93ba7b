"""`atelier doctor`: a good set-up passes (exit 0); each broken item is named (exit 1)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bot.ops.doctor import Verdict, application_id_of, token_shape, torch_finding
from bot.ops.gpu import TorchBuild
from bot.store.migrate import upgrade
from tests.configs import write_config
from tests.discord_server import LocalDiscord

REPO = Path(__file__).resolve().parents[2]


def doctor(config: Path, token: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DISCORD_TOKEN=token, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "doctor", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=config.parent,
        check=False,
        timeout=300,
    )


def discord_section(server: LocalDiscord, extra: str = "") -> str:
    return f'[discord]\napi_base = "{server.api_base}"\n{extra}'


async def test_a_good_setup_passes_every_check_and_prints_the_invite(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    async with LocalDiscord() as server:
        config = write_config(tmp_path, tiny_model_dir, extra=discord_section(server))
        await asyncio.to_thread(upgrade, f"sqlite+aiosqlite:///{tmp_path / 'data' / 'atelier.db'}")
        done = await _in_thread(doctor, config, server.bot_token)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "all checks passed"
    assert any(line.startswith("✔ Discord login: Discord accepts the token") for line in lines)
    invite = next(line for line in lines if line.startswith("✔ invite:"))
    assert f"client_id={server.bot_user_id}" in invite
    assert "scope=bot+applications.commands" in invite and "permissions=117760" in invite
    assert any(
        line.startswith("✔ models.tiny.source: folder tiny (") and "SD 1.x/2.x" in line
        for line in lines
    )
    assert any(line.startswith("✔ torch and CUDA: torch ") for line in lines)
    assert any(line.startswith("✔ database: at revision") for line in lines)
    assert server.bot_token not in done.stdout + done.stderr


async def test_each_broken_item_is_named_with_advice(tmp_path: Path, tiny_model_dir: Path) -> None:
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    async with LocalDiscord() as server:
        extra = discord_section(server) + "[storage]\nmin_free_gb = 1000000\n"
        config = write_config(tmp_path, tmp_path / "missing", extra=extra)
        text = config.read_text().replace('devices = ["cpu"]', 'devices = ["cuda:0"]')
        config.write_text(text + f'[models.other]\nsource = "{empty}"\n')
        database = tmp_path / "data" / "atelier.db"
        await asyncio.to_thread(upgrade, f"sqlite+aiosqlite:///{database}")
        with sqlite3.connect(database) as connection:
            connection.execute("update alembic_version set version_num = '9999_future'")
        wrong = server.bot_token[:-4] + "AAAA"  # well-formed, but not this bot's
        done = await _in_thread(doctor, config, wrong)
    assert done.returncode == 1, done.stdout + done.stderr
    failed = {line.split(":")[0][2:] for line in done.stdout.splitlines() if line[0] == "✘"}
    assert failed == {
        "Discord login",
        "models.tiny.source",
        "models.other.source",
        "torch and CUDA",
        "disk",
        "database",
    }
    lines = done.stdout.splitlines()
    assert "— reset it at" in next(line for line in lines if "Discord login" in line)
    assert "does not exist" in next(line for line in lines if "models.tiny.source" in line)
    assert "no model_index.json" in next(line for line in lines if "models.other" in line)
    assert "sees no GPU" in next(line for line in lines if "torch and CUDA" in line)
    assert "unknown to this Atelier" in next(line for line in lines if "✘ database" in line)
    assert lines[-1].startswith("6 problem(s): ")


async def test_a_discord_that_cannot_be_reached_is_named_with_what_to_check(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    async with LocalDiscord() as server:
        config = write_config(tmp_path, tiny_model_dir, extra=discord_section(server))
    # Stopped: nothing listens at api_base any more.
    done = await _in_thread(doctor, config, server.bot_token)
    assert done.returncode == 1, done.stdout + done.stderr
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("✘ Discord login")]
    assert line.startswith(f"✘ Discord login: could not reach Discord at {server.api_base}")
    assert "(connection refused)" in line and "[discord] api_base" in line


@pytest.mark.parametrize(
    ("token", "says"),
    [
        ("", "no token in DISCORD_TOKEN"),
        ("Bot MTIzNDU2Nzg5MDEyMzQ1Njc4OQ.8qgalw.YYSEpl777F98RsMzTiEX2DNpdHMC4UKJ", '"Bot "'),
        ('"MTIzNDU2Nzg5MDEyMzQ1Njc4OQ.8qgalw.YYSEpl777F98RsMzTiEX2DNpdHMC4UKJ"', "quotes"),
        ("abcdefghijklmnopqrstuvwxyzABCDEF", "client secret"),
        ("ab" * 32, "public key"),
        ("123456789012345678", "application or user id"),
    ],
)
def test_common_token_mistakes_are_recognised(token: str, says: str) -> None:
    finding = token_shape(token, "DISCORD_TOKEN")
    assert finding.verdict is Verdict.FAIL
    assert says in finding.detail


def test_a_token_carries_its_application_id() -> None:
    token = "MTIzNDU2Nzg5MDEyMzQ1Njc4OQ.8qgalw.YYSEpl777F98RsMzTiEX2DNpdHMC4UKJ"
    assert token_shape(token, "DISCORD_TOKEN").verdict is Verdict.OK
    assert application_id_of(token) == 1234567890123456789


def test_a_cpu_only_torch_on_a_machine_with_an_nvidia_gpu_is_the_classic_mistake() -> None:
    cpu_only = TorchBuild(version="2.13.0+cpu", cuda=None, cuda_available=False)
    finding = torch_finding(["cuda:0"], ["NVIDIA H200"], cpu_only)
    assert finding.verdict is Verdict.FAIL
    assert "CPU-only build" in finding.detail and "NVIDIA H200" in finding.detail
    assert "download.pytorch.org/whl/cu" in finding.advice
    cuda = TorchBuild(
        version="2.13.0+cu126", cuda="12.6", cuda_available=True, devices=("NVIDIA H200",)
    )
    assert torch_finding(["cuda:0"], ["NVIDIA H200"], cuda).verdict is Verdict.OK
    assert torch_finding(["cuda:1"], ["NVIDIA H200"], cuda).verdict is Verdict.FAIL
    assert torch_finding(["cpu"], ["NVIDIA H200"], cuda).verdict is Verdict.WARN


def test_no_torch_at_all_points_to_the_engine_extra() -> None:
    missing = TorchBuild(error="No module named 'torch'")
    finding = torch_finding(["cpu"], [], missing)
    assert finding.verdict is Verdict.FAIL
    assert 'pip install "atelier-bot[engine]"' in finding.advice


async def _in_thread(run: object, config: Path, token: str) -> subprocess.CompletedProcess[str]:
    """The doctor runs in a child process while this loop serves the local Discord."""
    return await asyncio.to_thread(run, config, token)  # type: ignore[arg-type]
