"""The `[engine]` speed keys: read and checked with the config, sent to every engine process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bot.config import ConfigError, load_config
from bot.jobs.engine_client import EngineFailure, EngineProcess
from engine.protocol import EngineSpeed, ModelSpec

CONFIG = """
[engine]
devices = {devices}
default_model = "tiny"
{engine}

[models.tiny]
source = "./tiny"
width = 64
height = 64
"""


def config_file(tmp_path: Path, engine: str = "", devices: str = '["cpu"]') -> Path:
    (tmp_path / "tiny").mkdir(exist_ok=True)
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(devices=devices, engine=engine))
    return path


def test_the_recommended_options_are_the_default_and_compile_is_off(tmp_path: Path) -> None:
    speed = load_config(config_file(tmp_path)).engine.speed()
    assert speed == EngineSpeed(
        dtype="auto", attention="sdpa", channels_last=True, fuse_qkv=True, compile=False
    )
    assert speed.warmup_model is None


def test_compile_warms_up_the_default_model_alone_and_at_the_largest_batch(
    tmp_path: Path,
) -> None:
    engine = 'compile = true\ncompile_mode = "max-autotune-no-cudagraphs"\nmax_batch_images = 4'
    speed = load_config(config_file(tmp_path, engine, devices='["cuda:0"]')).engine.speed()
    assert (speed.compile, speed.compile_mode) == (True, "max-autotune-no-cudagraphs")
    assert (speed.warmup_model, speed.warmup_batch_images) == ("tiny", [1, 4])


def test_an_sdxl_vae_path_is_resolved_against_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "vae-fp16").mkdir()
    config = load_config(config_file(tmp_path, 'sdxl_vae = "./vae-fp16"'))
    assert config.engine.speed().sdxl_vae == str(tmp_path / "vae-fp16")


@pytest.mark.parametrize(
    ("engine", "expected"),
    [
        ('dtype = "fp16"', 'engine.dtype: "fp16" needs a GPU, and devices include "cpu"'),
        ('dtype = "fp8"', "engine.dtype: Input should be 'auto', 'fp16', 'bf16' or 'fp32'"),
        ('attention = "classic"', "engine.fuse_qkv: fused projections run on SDPA attention"),
        ('compile_mode = "fastest"', "engine.compile_mode: Input should be"),
        ('sdxl_vae = "./missing"', "engine.sdxl_vae: './missing' does not exist"),
    ],
)
def test_a_speed_setting_the_devices_cannot_run_is_refused_naming_the_key(
    tmp_path: Path, engine: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(config_file(tmp_path, engine))
    assert expected in str(raised.value)
    assert "\n" not in str(raised.value)


async def test_the_engine_process_refuses_a_dtype_its_device_cannot_run(
    tiny_model_dir: Path,
) -> None:
    engine = EngineProcess(
        "cpu",
        {"tiny": ModelSpec(source=str(tiny_model_dir))},
        dict(os.environ),
        speed=EngineSpeed(dtype="fp16"),
    )
    with pytest.raises(EngineFailure, match=r'cpu refused to start: .*dtype = "fp16" needs a GPU'):
        await engine.start()
    assert not engine.alive
