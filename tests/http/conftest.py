"""The HTTP API running in-process on the tiny model, as bot.app wires it: a real engine
subprocess, a database made by the migrations (SQLite, then PostgreSQL), and members
with API keys.

Clients in these tests are written the way Stability's documentation writes them:
plain `requests`, run in a thread so the server keeps the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import requests
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.app import build_core, build_http, build_moderation
from bot.config import Config, load_config
from bot.core import Core
from bot.http.server import HttpApi
from bot.jobs.service import JobService
from bot.store.api_keys import ApiKeyStore
from bot.store.audit import Actor
from bot.store.db import open_engine, session_factory
from bot.store.guilds import GuildStore
from bot.store.migrate import upgrade
from bot.store.models import Base
from bot.store.quotas import QuotaRules, QuotaStore
from bot.store.users import UserStore
from bot.wiring import build_engines, build_service
from tests.configs import lora_toml, write_config
from tests.databases import SQLITE, Database

GUILD_ID = 4242
HTTP_CONFIG = """
[http]
enabled = true
host = "127.0.0.1"
port = 0
max_body_mb = 2.0
requests_per_minute = 0

[generation]
max_attachment_mb = 1.0

[queue]
stop_grace_seconds = 1.0

[billing]
price_per_gpu_hour = 3.6
currency = "EUR"

[styles.cinematic]
prompt = "cinematic still of {prompt}"
negative = "cartoon"
"""


# The package's server is shared by every test of a run's worker, and their members
# by one server (GUILD_ID): a server-wide rate limit would tie unrelated tests together
# (a test that queues a job per action drained it for the next one, on a busy machine).
# Each member's own limit still holds; the server-wide rule is tested in
# tests/bot/test_rate.py.
SHARED_GUILD = """
[moderation]
guild_burst = 0
"""


def png(width: int, height: int, colour: Any = "red", mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), colour).save(out, format="PNG")
    return out.getvalue()


@dataclass(frozen=True)
class Member:
    user_id: int
    key_id: int
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass
class RunningApi:
    url: str
    config: Config
    sessions: async_sessionmaker[AsyncSession]
    service: JobService
    core: Core
    http: HttpApi
    keys: ApiKeyStore
    quotas: QuotaStore
    users: UserStore
    guilds: GuildStore
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(5001))

    async def member(self, role_ids: tuple[int, ...] = ()) -> Member:
        """A new member (own quotas, own ledger) with a key made as /apikey create makes it."""
        user_id = next(self._ids)
        actor = Actor(user_id, GUILD_ID)
        made = await self.keys.create(
            user_id, f"member{user_id}", "tests", GUILD_ID, role_ids, actor
        )
        return Member(user_id, made.key_id, made.secret)

    async def count(self, model: type[Base], *where: Any) -> int:
        async with self.sessions() as session:
            total = await session.scalar(select(func.count()).select_from(model).where(*where))
            return total or 0

    async def rows(self, model: type[Base], *where: Any) -> list[Any]:
        """The rows, in the order they were written (their keys'): PostgreSQL returns
        rows without an ORDER BY in whatever order its pages hold them."""
        order = model.__table__.primary_key.columns
        async with self.sessions() as session:
            return list((await session.scalars(select(model).where(*where).order_by(*order))).all())

    async def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One plain `requests` call, in a thread (the server needs this event loop)."""
        kwargs.setdefault("timeout", 120)
        return await asyncio.to_thread(requests.request, method, self.url + path, **kwargs)


@contextlib.asynccontextmanager
async def serving(
    directory: Path,
    model_dir: Path,
    extra: str = "",
    database: Database = SQLITE,
    model: str = "",
) -> AsyncIterator[RunningApi]:
    """The API served from `directory` over a fresh `database` with workers running
    (`extra`: more config; `model`: more keys of the tiny model's section), then stopped
    with its job service and database."""
    with database.fresh() as section:
        running, engine = await open_api(directory, model_dir, section + extra, model=model)
        try:
            await running.service.start()
            await running.http.start()
            running.service.start_workers()
            running.url = running.http.url
            yield running
        finally:
            await running.http.stop()
            await running.service.stop()
            await engine.dispose()


async def open_api(
    directory: Path, model_dir: Path, extra: str = "", http: str = "", model: str = ""
) -> tuple[RunningApi, AsyncEngine]:
    """The API's services, not started; `http`: more keys of its [http] section, `model`
    of the tiny model's."""
    http_config = HTTP_CONFIG.replace("[http]\n", f"[http]\n{http}\n", 1)
    written = write_config(directory, model_dir, extra=http_config + extra, steps=3, model=model)
    config = load_config(written)
    await asyncio.to_thread(upgrade, config.database_url)
    database = open_engine(config.database_url)
    sessions = session_factory(database)
    quotas = QuotaStore(sessions, QuotaRules.from_config(config))
    service = build_service(config, sessions, quotas, build_engines(config))
    keys = ApiKeyStore(sessions)
    moderation = build_moderation(config, sessions)
    core = build_core(config, sessions, service, moderation, quotas)
    http = build_http(config, sessions, service, quotas, keys, moderation, core)
    running = RunningApi(
        url="",
        config=config,
        sessions=sessions,
        service=service,
        core=core,
        http=http,
        keys=keys,
        quotas=quotas,
        users=UserStore(sessions, service.blobs),
        guilds=GuildStore(sessions),
    )
    return running, database


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def api(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_model_dir: Path,
    tiny_lora: Path,
    database: Database,
) -> AsyncIterator[RunningApi]:
    """One server for the package's tests (on each database); each test makes its own
    members. The tiny LoRA is configured (lora_toml), also as the draft LoRA."""
    folder = tmp_path_factory.mktemp("http")
    loras, draft = lora_toml(tiny_lora)
    async with serving(folder, tiny_model_dir, loras + SHARED_GUILD, database, draft) as running:
        yield running
