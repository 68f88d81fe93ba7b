"""The `atelier` command as a newcomer runs it: tiny model, database, generate."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from bot.jobs.spec import fit_ratio
from tests.configs import write_config

REPO = Path(__file__).resolve().parents[2]


def atelier(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
        timeout=300,
    )


def test_smoke_path_tiny_model_then_db_upgrade_then_generate(tmp_path: Path) -> None:
    made = atelier("tiny-model", "models/tiny", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "models/tiny/model_index.json").is_file()
    config = write_config(tmp_path, tmp_path / "models/tiny")

    upgraded = atelier("db", "upgrade", "--config", str(config), cwd=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "database is up to date" in upgraded.stdout
    with sqlite3.connect(tmp_path / "data/atelier.db") as database:
        tables = {row[0] for row in database.execute("select name from sqlite_master")}
    assert {"users", "jobs", "outputs", "audit_log"} <= tables

    out = tmp_path / "out"
    made = atelier(
        "generate",
        "a small red house",
        "--config",
        str(config),
        "--out",
        str(out),
        "--seed",
        "21",
        "--count",
        "2",
        "--steps",
        "3",
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    assert "3/3" in made.stderr  # the terminal progress bar reached the last step
    files = sorted(out.glob("*.png"))
    assert len(files) == 2
    for path, seed in zip(files, (21, 22), strict=True):
        assert f"{path}  seed {seed}  64x64" in made.stdout
        with Image.open(path) as image:
            assert image.size == (64, 64)
            assert f"Seed: {seed}" in image.text["parameters"]
            assert json.loads(image.text["atelier"])["seed"] == seed


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--steps", "999"], "`steps` must be between 1 and 150"),
        (["--sampler", "Euler b"], "choose one of: Euler, Euler a, Heun, DPM2, DPM2 a, DPM++ 2M"),
        (["--mask", "m.png"], "A `mask` needs the `image`"),
        (["--image", "missing.png"], "--image missing.png: No such file or directory"),
    ],
)
def test_generate_refuses_bad_options_in_one_line_before_starting_an_engine(
    tmp_path: Path, tiny_model_dir: Path, arguments: list[str], message: str
) -> None:
    config = write_config(tmp_path, tiny_model_dir)
    mask = Image.new("L", (64, 64), 0)  # a usable mask: repaint a square, keep the rest
    mask.paste(255, (16, 16, 48, 48))
    mask.save(tmp_path / "m.png")
    done = atelier(
        "generate",
        "x",
        "--config",
        str(config),
        "--out",
        str(tmp_path / "out"),
        *arguments,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("atelier: ") and message in line
    assert not list(tmp_path.glob("out/*.png"))


def test_generate_covers_every_mode_with_the_tiny_models(
    tmp_path: Path, tiny_model_set: dict[str, Path]
) -> None:
    models = f"""
[models.sdxl]
source = "{tiny_model_set["sdxl"]}"
width = 64
height = 64
steps = 2
sampler = "Euler"

[models.tiny.controlnets]
scribble = "{tiny_model_set["controlnet-scribble"]}"
"""
    config = write_config(tmp_path, tiny_model_set["sd15"], extra="", steps=2)
    config.write_text(
        config.read_text()
        + f'inpaint = "{tiny_model_set["inpaint"]}"\n'
        + f'preview_decoder = "{tiny_model_set["taesd"]}"\n'
        + models
    )
    Image.new("RGB", (96, 64), "green").save(tmp_path / "photo.png")
    mask = Image.new("RGBA", (48, 32), (0, 0, 0, 0))
    mask.paste((255, 255, 255, 255), (12, 8, 36, 24))  # repaint the middle
    mask.save(tmp_path / "mask.png")
    sketch = Image.new("RGB", (64, 64), "white")
    sketch.paste((0, 0, 0), (10, 30, 54, 34))  # a dark line on white
    sketch.save(tmp_path / "sketch.png")
    cases = {
        "img2img": ["--image", "photo.png", "--strength", "0.6"],
        "inpaint": ["--image", "photo.png", "--mask", "mask.png"],
        "controlnet": ["--control", "sketch.png", "--control-type", "scribble"],
        "sdxl": ["--model", "sdxl", "--sampler", "DPM++ 2M Karras"],
    }
    for mode, arguments in cases.items():
        out = tmp_path / mode
        done = atelier(
            "generate",
            "a cabin",
            "--config",
            str(config),
            "--out",
            str(out),
            "--seed",
            "5",
            *arguments,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        (path,) = out.glob("*.png")
        with Image.open(path) as image:
            recipe = json.loads(image.text["atelier"])
            # An input image sets the shape, at the model's own area.
            expected = fit_ratio(96 / 64, 64 * 64) if mode in ("img2img", "inpaint") else (64, 64)
            assert image.size == expected, mode
        assert recipe["mode"] == ("txt2img" if mode == "sdxl" else mode)
        assert recipe["seed"] == 5
