"""deploy/: the worker's systemd unit keeps the bot unit's behaviour, and the compose file's
services fit together (docker itself cannot run here: docs/operations.md says what is
untested)."""

from __future__ import annotations

import re
import shlex
import tomllib
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.engine import make_url

from bot.config import load_config

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"


def unit(name: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit's sections, each key with its values in order (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    section = ""
    for line in (DEPLOY / name).read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif line and not line.startswith("#"):
            key, _, value = line.partition("=")
            sections[section][key].append(value)
    return sections


def test_the_worker_unit_runs_atelier_worker_as_the_bot_unit_runs_the_bot() -> None:
    bot, worker = unit("atelier.service"), unit("atelier-worker.service")
    (command,) = worker["Service"].pop("ExecStart")
    assert shlex.split(command)[1:] == ["worker", "--config", "/srv/atelier/config.toml"]
    assert shlex.split(command)[0] == shlex.split(bot["Service"].pop("ExecStart")[0])[0]
    # No Discord token on a GPU host; every other setting (user, stop signal and grace,
    # no restart on a config error, the sandbox) is the bot's.
    del bot["Service"]["LoadCredential"]
    assert worker["Service"] == bot["Service"]
    assert worker["Install"] == bot["Install"]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Where each volume or file of a service is mounted: {source: path in the container}."""
    return {
        source: target
        for source, target, *_ in (volume.split(":") for volume in service["volumes"])
    }


def test_the_compose_file_builds_a_front_door_without_torch_and_a_gpu_worker() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "front-door", "worker"}
    front, worker = services["front-door"], services["worker"]
    for service in (front, worker):
        assert service["build"]["context"] == ".."
        assert (DEPLOY / ".." / service["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert front["build"]["args"]["EXTRAS"] == ""
    assert "engine" in worker["build"]["args"]["EXTRAS"].split(",")
    assert front["command"][0] == "run" and worker["command"][0] == "worker"
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"


def test_the_compose_configs_load_and_meet_at_one_database_and_one_data_folder() -> None:
    document = compose()
    services = document["services"]
    postgres = services["postgres"]["environment"]
    configs = {}
    for name in ("front-door", "worker"):
        service = services[name]
        (source,) = [s for s, target in mounts(service).items() if target == service["command"][2]]
        config = configs[name] = load_config(DEPLOY / source)
        url = make_url(config.database.url or "")
        assert url.drivername == "postgresql+asyncpg" and url.host == "postgres"
        assert (url.username, url.database) == (postgres["POSTGRES_USER"], postgres["POSTGRES_DB"])
        # Jobs' files: the front door reads what the worker writes, in the shared volume.
        assert mounts(service)["data"] == str(config.storage.data_dir)
    front, worker = configs["front-door"], configs["worker"]
    assert front.engine.devices == [] and worker.engine.devices
    assert front.models.keys() == worker.models.keys()
    secret = Path(str(front.discord.token_file))
    assert secret.parent == Path("/run/secrets")
    assert secret.name in services["front-door"]["secrets"]
    assert set(document["secrets"]) >= {secret.name, "postgres-password"}


def test_the_dockerfile_copies_every_package_the_project_installs() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    copied = {
        source
        for line in re.findall(r"^COPY (.+)$", dockerfile, re.MULTILINE)
        for source in line.split()[:-1]
    }
    assert all((REPO / source).exists() for source in copied), copied
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {
        name.rstrip("*") for name in project["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert packages | {"pyproject.toml", "constraints.txt", project["project"]["readme"]} <= copied
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert not copied & ignored
