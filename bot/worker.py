"""`atelier worker`: a GPU host's process. One engine per configured device claims, from
the queue shared through the database (PostgreSQL for several hosts), the jobs of the
models this host serves, each batch under a lease its heartbeat renews; no Discord, no
HTTP: the front doors (`atelier run`, `atelier serve`) take the requests and deliver the
answers (docs/operations.md, "Several GPU hosts")."""

from __future__ import annotations

import asyncio
import logging

from .config import Config
from .store.db import session_factory
from .store.quotas import QuotaRules, QuotaStore
from .wiring import build_engines, build_service, on_signals, open_database

log = logging.getLogger(__name__)


class NoEngines(Exception):
    """A worker configured with no device would claim nothing."""


async def run_worker(config: Config) -> None:
    """Run the engines' workers until SIGTERM or SIGINT, then stop as `atelier run` does:
    claim nothing more, give running batches `[queue] stop_grace_seconds`, and return
    what is still running to the queue, its attempt not counted."""
    if not config.engine.devices:
        raise NoEngines(
            "[engine] devices is empty: a worker runs one engine per device; list them,"
            ' e.g. devices = ["cuda:0"]'
        )
    database = await open_database(config)
    sessions = session_factory(database)
    quotas = QuotaStore(sessions, QuotaRules.from_config(config))
    service = build_service(config, sessions, quotas, build_engines(config))
    stop = asyncio.Event()
    restore_signals = on_signals(stop)
    try:
        await service.start()
        service.start_workers()
        log.info(
            "worker %s: serving %s on %s",
            service.store.worker_id,
            ", ".join(sorted(config.models)),
            ", ".join(config.engine.devices),
        )
        await stop.wait()
        grace = config.queue.stop_grace_seconds
        log.info("stopping: no new jobs; a running batch has %g s to finish", grace)
        service.stop_claiming()
        await service.stop(grace)
    finally:
        restore_signals()
        await service.stop()
        await database.dispose()
