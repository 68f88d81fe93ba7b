"""`atelier serve`: the HTTP API alone, no Discord token, and no engine extra in its own
process; schemathesis against the OpenAPI document it serves."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from bot.config import Config, load_config
from bot.quota import Limits
from bot.store.api_keys import ApiKeyStore
from bot.store.audit import Actor
from bot.store.db import open_engine, session_factory
from bot.store.migrate import upgrade
from bot.store.models import QuotaScope
from bot.store.quotas import QuotaRules, QuotaStore
from tests.configs import write_config
from tests.installs import without_engine

REPO = Path(__file__).resolve().parents[2]
MEMBER = 9001
# Every check schemathesis has that a correct server passes, whatever the data:
# positive_data_acceptance is left out, as the API has rules a schema cannot say (a
# prompt needs a positive weight, a file must be an image, a mask must paint
# something), and max_response_time, as generating takes what it takes.
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_headers_conformance,response_schema_conformance,negative_data_rejection,"
    "missing_required_header,unsupported_method,allow_header_conformance,use_after_free,"
    "ensure_resource_availability,ignored_auth"
)


@dataclass(frozen=True)
class Served:
    url: str
    key: str
    log: Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def member_key(config: Config) -> str:
    """A key for MEMBER, made as /apikey create makes it, with small limits: the fuzzer's
    requests that pass validation make a few images, not an afternoon's worth."""
    await asyncio.to_thread(upgrade, config.database_url)
    database = open_engine(config.database_url)
    try:
        sessions = session_factory(database)
        made = await ApiKeyStore(sessions).create(MEMBER, "fuzzer", "ci", 1, [], Actor(MEMBER, 1))
        limits = Limits(images_per_day=4, gpu_seconds_per_day=60.0, jobs_queued=2)
        await QuotaStore(sessions, QuotaRules.from_config(config)).set_policy(
            QuotaScope.USER, MEMBER, limits, Actor(1)
        )
        return made.secret
    finally:
        await database.dispose()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("serve")
    port = free_port()
    extra = f"""
[http]
port = {port}
requests_per_minute = 0

[quota]
default_gpu_seconds = 600.0
"""
    config_path = write_config(directory, tiny_model_dir, extra=extra, steps=3)
    key = asyncio.run(member_key(load_config(config_path)))
    env = {name: value for name, value in os.environ.items() if name != "DISCORD_TOKEN"}
    log = directory / "serve.log"
    with log.open("wb") as sink:
        # As a front door installed without the engine extra: torch and the rest are
        # unimportable in this process (its engine, a child, has them).
        process = subprocess.Popen(
            without_engine(arguments=("serve", "--config", str(config_path))),
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, log.read_text(errors="replace")
            try:
                if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.2)
        yield Served(url, key, log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
    logged = log.read_text(errors="replace")
    print(logged)  # shown by pytest when a test fails
    assert code == 0, logged
    assert key not in logged  # the secret never reaches a log
    assert 'HTTP/1.1" 500' not in logged


def test_serve_runs_the_api_without_discord_and_its_workers_at_once(served: Served) -> None:
    response = requests.post(
        f"{served.url}/v1/generation/tiny/text-to-image",
        headers={"Authorization": f"Bearer {served.key}"},
        json={"text_prompts": [{"text": "A lighthouse on a cliff"}], "steps": 3, "seed": 1},
        timeout=180,
    )
    assert response.status_code == 200, response.text
    assert [a["seed"] for a in response.json()["artifacts"]] == [1]
    health = requests.get(f"{served.url}/healthz", timeout=10).json()
    assert health["status"] == "ok" and health["engines"][0]["alive"] is True


def test_schemathesis_finds_no_server_error_against_the_served_document(
    served: Served, tmp_path: Path
) -> None:
    # The same requests on every run and every machine (with the versions in
    # constraints.txt): derandomized generation (which keeps no example database
    # between runs), one worker, a fixed number of examples per operation.
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "from schemathesis.cli import schemathesis; schemathesis()",
            "run",
            f"{served.url}/openapi.json",
            "--wait-for-schema",
            "30",
            "--header",
            f"Authorization: Bearer {served.key}",
            "--max-examples",
            "30",
            "--phases",
            "examples,fuzzing",
            "--checks",
            CHECKS,
            "--workers",
            "1",
            "--generation-deterministic",
            "--no-shrink",
            "--request-timeout",
            "120",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "passed" in run.stdout


def test_serve_on_a_taken_port_stops_with_one_line(tmp_path: Path, tiny_model_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, tiny_model_dir, extra=f"[http]\nport = {port}\n")
        done = subprocess.run(
            [sys.executable, "-m", "bot.cli", "serve", "--config", str(config)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"atelier: cannot serve the HTTP API on 127.0.0.1:{port}:"), last
