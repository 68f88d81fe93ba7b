"""Starting with nothing but a token: built-in defaults, the missing-token line, `atelier init`."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import load_config
from bot.defaults import DEFAULT_MODEL_SOURCE, builtin_config, model_name_of
from bot.ops.gpu import choose_device, nvidia_gpus
from bot.ops.init import init

REPO = Path(__file__).resolve().parents[2]


def atelier(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=False,
        timeout=120,
    )


def test_run_with_no_config_and_no_token_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN"} | {"PYTHONPATH": str(REPO)}
    done = atelier("run", cwd=tmp_path, env=env)
    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("atelier: no Discord bot token in DISCORD_TOKEN: get one at")
    assert "https://discord.com/developers/applications" in line
    assert not (tmp_path / "data").exists()  # nothing written before the token is there


def test_builtin_defaults_are_sqlite_under_data_and_the_sd15_repo(tmp_path: Path) -> None:
    config = builtin_config(None, "cpu", tmp_path, env={})
    assert config.database_url == f"sqlite+aiosqlite:///{tmp_path / 'data' / 'atelier.db'}"
    assert config.engine.devices == ["cpu"]
    assert config.models[config.engine.default_model].source == DEFAULT_MODEL_SOURCE
    assert not config.metrics.enabled and config.metrics.host == "127.0.0.1"


def test_a_model_given_by_flag_is_the_default_under_a_short_name(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    config = builtin_config(str(tiny_model_dir), "cpu", tmp_path, env={})
    assert config.engine.default_model == "tiny"
    assert config.models["tiny"].source == str(tiny_model_dir)
    assert model_name_of("someone/My Model_v2.safetensors") == "my-model_v2"


def test_the_endpoints_of_a_run_without_config_can_come_from_the_environment(
    tmp_path: Path,
) -> None:
    env = {"ATELIER_DISCORD_API_BASE": "http://127.0.0.1:1/api/v10"}
    config = builtin_config(None, "cpu", tmp_path, env=env)
    assert config.discord.api_base == "http://127.0.0.1:1/api/v10"
    assert config.discord.gateway_url == "wss://gateway.discord.gg/"


def namespace(path: Path, **given: str | None) -> argparse.Namespace:
    values: dict[str, object] = {
        "token_env": None,
        "token_file": None,
        "model": None,
        "device": None,
        "force": False,
    }
    return argparse.Namespace(config=path, **(values | given))


def test_init_writes_a_commented_config_that_loads_as_the_builtin_defaults(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.toml"
    assert init(namespace(path, device="cpu")) == 0
    text = path.read_text()
    assert text.count("\n# ") > 30  # every key explained
    assert "[models.sd15]\n# Hugging Face repo id" in text
    assert load_config(path) == builtin_config(None, "cpu", tmp_path, env={})
    assert init(namespace(path)) == 2  # never overwrites without --force


def test_init_asks_what_no_flag_gave_and_takes_a_token_file(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    asked: list[str] = []
    answers = {"env": "file", "File": "secret/token", "Default model": str(tiny_model_dir)}

    def ask(question: str, default: str) -> str:
        asked.append(question)
        return next((a for key, a in answers.items() if key in question), default)

    path = tmp_path / "config.toml"
    assert init(namespace(path, device="cpu"), ask) == 0
    assert len(asked) == 3  # token source, token file, model; the device came by flag
    config = load_config(path)
    assert config.discord.token_file == tmp_path / "secret" / "token"
    assert config.engine.default_model == "tiny" and config.engine.devices == ["cpu"]


def test_without_an_nvidia_driver_the_device_is_the_cpu_with_a_speed_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    choice = choose_device(proc=tmp_path / "absent")
    assert choice.device == "cpu"
    assert choice.warning is not None and "minutes" in choice.warning


def test_the_driver_lists_gpus_in_proc(tmp_path: Path) -> None:
    gpu = tmp_path / "0000:01:00.0"
    gpu.mkdir()
    (gpu / "information").write_text("Model: \t NVIDIA H200\nIRQ: 42\n")
    assert nvidia_gpus(proc=tmp_path) == ["NVIDIA H200"]
