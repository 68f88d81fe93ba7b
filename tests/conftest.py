"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.buckets import CREDENTIALS, Bucket, new_bucket, s3_server
from tests.databases import Database, Kind, PostgresServer, postgres_server

# Under pytest-xdist every worker, and each engine it spawns, would start a torch
# thread per core: on a 2-core machine two workers' threads then contend, and the
# tiny models ran up to 15x slower than alone. One core's worth of threads each.
if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))


# Tests that each start bot and engine processes, first: with `--dist worksteal` the
# worker that finishes the quick ones takes half of the other's remaining long ones,
# instead of one worker starting a long test after the other has run out.
SLOW_FIRST = (
    "tests/e2e/",
    "tests/bench/",
    "tests/bot/test_cli.py",
    "tests/bot/test_job_service.py",
)


# The tests that run on PostgreSQL as well as SQLite (those that ask for `database`):
# the stores, the claim and scheduling, admission, the editor links, the HTTP API and the
# bot's lifecycle.
ON_BOTH_DATABASES = (
    "tests/store/",
    "tests/bot/test_claim_heads.py",
    "tests/bot/test_job_store.py",
    "tests/bot/test_leases.py",
    "tests/bot/test_queue_length.py",
    "tests/bot/test_remote_cancel.py",
    "tests/core/test_editor_links.py",
    "tests/core/test_result_cache.py",
    "tests/http/",
    "tests/e2e/test_lifecycle.py",
    "tests/e2e/test_result_cache.py",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        choices=("both", *Kind),
        default="both",
        help="the databases the tests in ON_BOTH_DATABASES run on (default: both)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test of ON_BOTH_DATABASES that asks for `database` once per database;
    every other test that asks for it runs on SQLite only."""
    if "database" not in metafunc.fixturenames:
        return
    chosen = metafunc.config.getoption("--db")
    kinds = list(Kind) if chosen == "both" else [Kind(chosen)]
    marked = metafunc.definition.get_closest_marker
    if marked("postgresql_only"):  # under --db sqlite: an empty set, reported as skipped
        kinds = [kind for kind in kinds if kind is Kind.POSTGRESQL]
    elif marked("sqlite_only") or not metafunc.definition.nodeid.startswith(ON_BOTH_DATABASES):
        return  # `database` is SQLite, and the test keeps its name
    metafunc.parametrize("database", kinds, indirect=True, scope="session")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sqlite_only: a test of SQLite itself (its file, its locks): not run on PostgreSQL",
    )
    config.addinivalue_line("markers", "postgresql_only: a test of PostgreSQL's own behaviour")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the session (for each xdist worker)."""
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def database(request: pytest.FixtureRequest) -> Database:
    """The database a test's stores and bot use: SQLite, or each database in turn where
    pytest_generate_tests parametrizes it."""
    kind = Kind(getattr(request, "param", Kind.SQLITE))
    if kind is Kind.SQLITE:
        return Database(kind)
    return Database(kind, request.getfixturevalue("postgres"))


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """One local S3 server (moto) for the session (for each xdist worker)."""
    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    """A fresh bucket on the local S3 server, its credentials in the environment."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    return new_bucket(s3_endpoint)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not item.nodeid.startswith(SLOW_FIRST))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight SD 1.5 pipeline in diffusers format, built once per session."""
    # Imported here so test sessions that never ask for a model do not load torch.
    from engine.tiny import write_tiny_sd15

    return write_tiny_sd15(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def tiny_lora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LoRA for the tiny SD 1.5 UNet (a folder), built once per session."""
    from engine.tiny import write_tiny_lora

    return write_tiny_lora(tmp_path_factory.mktemp("models") / "lora")


@pytest.fixture(scope="session")
def tiny_model_set(
    tiny_model_dir: Path, tiny_lora: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Every tiny model by name, as `python -m engine.tiny --all DIR` lays them out.

    sd15 (the `tiny_model_dir` pipeline), sdxl, controlnet-scribble (fits sd15),
    inpaint (9-channel UNet), taesd (preview decoder), ip-adapter and lora (the
    `tiny_lora`); built once per session.
    """
    from engine.tiny import TINY_SET

    root = tmp_path_factory.mktemp("tiny-set")
    built = {"sd15": tiny_model_dir, "lora": tiny_lora}
    return {name: built.get(name) or write(root / name) for name, write in TINY_SET.items()}
