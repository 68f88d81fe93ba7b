"""Rows written in bulk (executemany), as months of use or a long queue would leave them.

The rows are what the bot itself writes (jobs with valid specs, outputs, ledger
entries, reservations, audit entries) through the same SQLAlchemy tables, only
many per statement, so a benchmark can start from 100 000 jobs in seconds.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Table, create_engine, select
from sqlalchemy.engine import Connection

from bot.jobs.spec import JobSpec
from bot.store.models import (
    AuditEntry,
    Job,
    JobState,
    Lane,
    Output,
    Reservation,
    UsageEntry,
    User,
    utcnow,
)

CHUNK = 5_000
# Job ids look like the bot's own (10 hex digits, which its buttons' custom ids expect);
# each kind of row gets its own range.
HISTORY_IDS = 0xA000000000
QUEUE_IDS = 0xB000000000
T = TypeVar("T")
FIRST_MEMBER = 900_000_000_000_000_000  # snowflake-sized ids, clear of the bench's others


def hex_id(first: int, number: int) -> str:
    return f"{first + number:010x}"


def members(count: int) -> list[int]:
    return [FIRST_MEMBER + index for index in range(count)]


def job_spec(prompt: str, seed: int, width: int = 64, height: int = 64, steps: int = 4) -> JobSpec:
    return JobSpec(
        prompt=prompt,
        model="tiny",
        width=width,
        height=height,
        steps=steps,
        cfg=7.0,
        sampler="Euler",
        seed=seed,
        count=1,
    )


@dataclass(frozen=True)
class Written:
    jobs: int
    rows: int


def _table(model: type[Any]) -> Table:
    table: Table = model.__table__
    return table


def _insert(connection: Connection, model: type[Any], rows: list[dict[str, Any]]) -> int:
    """Insert `rows` with one executemany, values converted by the columns' own SQLAlchemy
    types (so they read back exactly as the bot's rows do) but without its per-row work."""
    if not rows:
        return 0
    table = _table(model)
    dialect = connection.dialect
    columns = [column for column in table.columns if column.name in rows[0]]
    processors = [column.type.bind_processor(dialect) for column in columns]
    names = ", ".join(f'"{column.name}"' for column in columns)
    marks = ", ".join("?" for _ in columns)
    parameters = [
        tuple(
            value if process is None else process(value)
            for process, value in zip(processors, (row[c.name] for c in columns), strict=True)
        )
        for row in rows
    ]
    connection.exec_driver_sql(f"INSERT INTO {table.name} ({names}) VALUES ({marks})", parameters)
    return len(rows)


def _chunks(rows: Iterable[T]) -> Iterator[list[T]]:
    chunk: list[T] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _add_members(connection: Connection, ids: Sequence[int]) -> None:
    known = set(connection.scalars(select(User.id).where(User.id.in_(ids))))
    new = [
        {"id": user_id, "name": f"member{user_id % 1000}", "created_at": utcnow()}
        for user_id in ids
        if user_id not in known
    ]
    if new:
        _insert(connection, User, new)


def _audit(
    job_id: str, user_id: int, at: datetime, actions: Sequence[str], guild: int | None = None
) -> list[dict[str, Any]]:
    return [
        {
            "at": at,
            "actor_id": user_id,
            "guild_id": guild,
            "channel_id": None,
            "action": action,
            "target": job_id,
            "params": {"from": "bench"},
            "outcome": "ok",
        }
        for action in actions
    ]


def _sqlite_url(database: Path) -> str:
    return f"sqlite:///{database}"


def write_history(database: Path, jobs: int, users: int = 100, days: int = 30) -> Written:
    """`jobs` finished jobs of `users` members over the last `days` days, each with its
    output, ledger entry and five audit entries (queued, reserved, running, succeeded,
    settled), as a busy server accumulates them."""
    rng = random.Random(jobs)
    ids = members(users)
    now = utcnow()
    spec = job_spec("a lighthouse at dusk, oil painting", 0)
    rows = 0
    engine = create_engine(_sqlite_url(database))
    try:
        with engine.begin() as connection:
            _add_members(connection, ids)
            for chunk in _chunks(range(jobs)):
                job_rows, outputs, ledger, audit = [], [], [], []
                for number in chunk:
                    user = ids[number % users]
                    finished = now - timedelta(seconds=rng.uniform(0, days * 86_400))
                    started = finished - timedelta(seconds=3)
                    job = hex_id(HISTORY_IDS, number)
                    gpu_seconds = rng.uniform(1.0, 5.0)
                    job_rows.append(
                        {
                            "id": job,
                            "user_id": user,
                            "state": JobState.SUCCEEDED,
                            "spec": spec.model_copy(update={"seed": number}),
                            "model": "tiny",
                            "seeds": [number],
                            "error": None,
                            "gpu_seconds": gpu_seconds,
                            "device": "cuda:0",
                            "created_at": started - timedelta(seconds=5),
                            "started_at": started,
                            "finished_at": finished,
                            "delivered_at": finished,
                            "lane": Lane.NORMAL,
                            "attempts": 1,
                            "guild_id": None,
                            "channel_id": None,
                            "interaction_id": None,
                            "interaction_token": None,
                            "message_id": None,
                            "batch_id": None,
                            "upload_limit": None,
                        }
                    )
                    outputs.append(
                        {
                            "job_id": job,
                            "index": 0,
                            "path": f"images/{job}/0.png",
                            "sha256": "0" * 64,
                            "seed": number,
                            "width": 64,
                            "height": 64,
                            "recipe": {"seed": number},
                            "flags": {},
                        }
                    )
                    ledger.append(
                        {
                            "job_id": job,
                            "user_id": user,
                            "at": finished,
                            "images": 1,
                            "gpu_seconds": gpu_seconds,
                            "cost": 0.0,
                            "currency": "USD",
                            "lane": Lane.NORMAL,
                        }
                    )
                    audit += _audit(
                        job,
                        user,
                        finished,
                        (
                            "job.queued",
                            "quota.reserve",
                            "job.running",
                            "job.succeeded",
                            "quota.settle",
                        ),
                    )
                for model, batch in (
                    (Job, job_rows),
                    (Output, outputs),
                    (UsageEntry, ledger),
                    (AuditEntry, audit),
                ):
                    rows += _insert(connection, model, batch)
    finally:
        engine.dispose()
    return Written(jobs=jobs, rows=rows)


def write_queue(
    database: Path,
    jobs: int,
    users: int = 100,
    guild_id: int | None = None,
    channel_id: int | None = None,
    estimate: float = 1.0,
) -> Written:
    """`jobs` queued jobs from `users` members, with the reservations and audit entries
    admission writes, oldest first; a finished one is posted in `channel_id`."""
    ids = members(users)
    now = utcnow()
    rows = 0
    engine = create_engine(_sqlite_url(database))
    try:
        with engine.begin() as connection:
            _add_members(connection, ids)
            job_rows, reservations, audit = [], [], []
            for number in range(jobs):
                user = ids[number % users]
                job = hex_id(QUEUE_IDS, number)
                queued = now - timedelta(milliseconds=jobs - number)
                spec = job_spec(f"queued job {number}", number)
                job_rows.append(
                    {
                        "id": job,
                        "user_id": user,
                        "state": JobState.QUEUED,
                        "spec": spec,
                        "model": "tiny",
                        "seeds": [number],
                        "error": None,
                        "gpu_seconds": None,
                        "device": None,
                        "created_at": queued,
                        "started_at": None,
                        "finished_at": None,
                        "delivered_at": None,
                        "lane": Lane.NORMAL,
                        "attempts": 0,
                        "guild_id": guild_id,
                        "channel_id": channel_id,
                        "interaction_id": None,
                        "interaction_token": None,
                        "message_id": None,
                        "batch_id": None,
                        "upload_limit": None,
                    }
                )
                reservations.append(
                    {
                        "job_id": job,
                        "user_id": user,
                        "images": 1,
                        "gpu_seconds": estimate,
                        "cost": 0.0,
                        "created_at": queued,
                    }
                )
                audit += _audit(job, user, queued, ("job.queued", "quota.reserve"), guild_id)
            for model, batch in ((Job, job_rows), (Reservation, reservations), (AuditEntry, audit)):
                for chunk in _chunks(batch):
                    rows += _insert(connection, model, chunk)
    finally:
        engine.dispose()
    return Written(jobs=jobs, rows=rows)
