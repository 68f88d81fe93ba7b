"""Config is validated at start: one clear line naming the key, exit code 2."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import DISCORD_API_BASE, ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]

VALID = """
[engine]
devices = ["cpu"]
default_model = "tiny"

[models.tiny]
source = "./tiny"
width = 64
height = 64
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "tiny").mkdir(exist_ok=True)
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_valid_config_fills_defaults_and_resolves_paths(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID))
    assert config.discord.api_base == DISCORD_API_BASE
    assert config.models["tiny"].source == str(tmp_path / "tiny")
    assert config.storage.data_dir == tmp_path / "data"
    assert config.database_url == f"sqlite+aiosqlite:///{tmp_path / 'data' / 'atelier.db'}"


def test_styles_and_the_permutation_limit_are_read(tmp_path: Path) -> None:
    text = (
        VALID
        + """
[generation]
max_permutations = 12

[styles.noir]
prompt = "film noir still of {prompt}"
negative = "color"

[styles.sketch]
prompt = "pencil sketch"
"""
    )
    config = load_config(write(tmp_path, text))
    assert config.generation.max_permutations == 12
    assert config.styles["noir"].apply("a cat", "") == ("film noir still of a cat", "color")
    assert config.styles["sketch"].negative == ""


def test_no_style_and_eight_permutations_by_default(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID))
    assert (config.styles, config.generation.max_permutations) == ({}, 8)


def test_max_batch_images_is_8_on_cuda_1_on_cpu_unless_configured(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID))
    assert config.engine.max_batch_images is None
    assert [config.engine.batch_images(d) for d in ("cuda:0", "cuda", "cpu", "mps")] == [
        8,
        8,
        1,
        1,
    ]
    text = VALID.replace('devices = ["cpu"]', 'devices = ["cpu"]\nmax_batch_images = 3')
    configured = load_config(write(tmp_path, text))
    assert [configured.engine.batch_images(d) for d in ("cuda:0", "cpu")] == [3, 3]


def test_example_config_is_valid() -> None:
    config = load_config(REPO / "config.example.toml")
    assert config.engine.default_model in config.models


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (VALID + "\n[discord]\ntoken = 'x'\n", "discord.token: unknown key"),
        (VALID.replace('devices = ["cpu"]', "devices = 3"), "engine.devices:"),
        (VALID.replace("width = 64", "width = 'wide'"), "models.tiny.width:"),
        (
            VALID.replace('default_model = "tiny"', 'default_model = "sdxl"'),
            "engine.default_model: 'sdxl' is not a [models.<name>] section",
        ),
        (
            VALID.replace('source = "./tiny"', 'source = "./missing"'),
            "models.tiny.source: './missing' does not exist",
        ),
        (VALID.replace('default_model = "tiny"\n', ""), "engine.default_model: required key"),
        (
            VALID.replace('devices = ["cpu"]', 'devices = ["cpu"]\nmax_batch_images = 0'),
            "engine.max_batch_images:",
        ),
        ("[engine\n", "not valid TOML"),
        (
            VALID + "\n[styles.'film noir']\nprompt = 'x'\n",
            "styles.film noir: a style name is one word",
        ),
        (VALID + "\n[styles.noir]\nprompt = 'x'\nweight = 2\n", "styles.noir.weight: unknown key"),
        (VALID + "\n[generation]\nmax_permutations = 0\n", "generation.max_permutations:"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=None) as raised:
        load_config(write(tmp_path, text))
    assert expected in str(raised.value)
    assert "\n" not in str(raised.value)


def test_cli_reports_bad_config_in_one_line_with_exit_code_2(tmp_path: Path) -> None:
    path = write(tmp_path, VALID + "\n[storage]\ndata_dri = 'x'\n")
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "db", "upgrade", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"atelier: {path}: storage.data_dri: unknown key (see config.example.toml for every key)"
    ]
    assert "Traceback" not in done.stderr


def test_a_sqlite_without_returning_is_refused_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.31.1")
    with pytest.raises(ConfigError, match=r"SQLite is 3\.31\.1, and the bot needs 3\.35 or newer"):
        load_config(write(tmp_path, VALID))
    postgres = VALID + '\n[database]\nurl = "postgresql+asyncpg://atelier@localhost/atelier"\n'
    assert load_config(write(tmp_path, postgres)).database_url.startswith("postgresql")


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.toml")


FAMILIES = (
    VALID.replace("height = 64\n", 'height = 64\nfamily = "sd"\n', 1)
    + """
[models.own]
source = "./tiny"
family = "sd"
ip_adapter = "./own-adapter.safetensors"

[models.xl]
source = "./tiny"
family = "sdxl"

[families.sd]
ip_adapter = "h94/IP-Adapter/models/ip-adapter_sd15.safetensors"
image_encoder = "./encoder"
"""
)


def test_a_family_gives_its_ip_adapter_to_its_models_unless_they_set_their_own(
    tmp_path: Path,
) -> None:
    (tmp_path / "encoder").mkdir()
    (tmp_path / "own-adapter.safetensors").write_bytes(b"")
    models = load_config(write(tmp_path, FAMILIES)).models
    family = ("h94/IP-Adapter/models/ip-adapter_sd15.safetensors", str(tmp_path / "encoder"))
    assert (models["tiny"].ip_adapter, models["tiny"].image_encoder) == family
    # The model's own key wins; the key it leaves out still comes from its family.
    own = (str(tmp_path / "own-adapter.safetensors"), str(tmp_path / "encoder"))
    assert (models["own"].ip_adapter, models["own"].image_encoder) == own
    assert (models["xl"].ip_adapter, models["xl"].image_encoder) == (None, None)


def test_a_family_key_names_its_section_when_its_file_is_missing(tmp_path: Path) -> None:
    (tmp_path / "own-adapter.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"families\.sd\.image_encoder: './encoder' does not"):
        load_config(write(tmp_path, FAMILIES))


def test_an_unknown_family_is_refused_in_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, VALID + "\n[families.sd15]\nip_adapter = 'a/b/c.bin'\n"))
    assert str(raised.value).endswith(
        "config.toml: families.sd15: a family is sd (SD 1.x/2.x) or sdxl, so name the section"
        " [families.sd] or [families.sdxl]"
    )
