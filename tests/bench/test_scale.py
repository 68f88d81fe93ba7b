"""The scale item at toy sizes: claimers and worker pools (whose engine answers at once)
sharing one queue on SQLite and on PostgreSQL, measured and reported side by side.

No timing is asserted: only that every worker count ran on both databases, each claim
took a job (several when batching) and each finished job went the whole way (succeeded,
with its image)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from bench.items.scale import measure, report
from bench.report import Section
from bot.store.db import open_engine, session_factory
from bot.store.models import Job, JobState, Output
from tests.databases import PostgresServer


async def succeeded_with_images(url: str) -> tuple[int, int]:
    engine = open_engine(url)
    try:
        async with session_factory(engine)() as session:
            jobs = await session.scalar(
                select(func.count()).select_from(Job).where(Job.state == JobState.SUCCEEDED)
            )
            outputs = await session.scalar(select(func.count()).select_from(Output))
            return jobs or 0, outputs or 0
    finally:
        await engine.dispose()


async def test_scale_measures_claims_and_jobs_on_both_databases(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    with postgres.database() as url:
        # 1 s each: two worker pools on one SQLite file hand its write lock back and forth
        # through SQLite's sleeping busy handler; on a busy machine 0.3 s once finished
        # no job at all (CI).
        sqlite, postgresql = await measure(tmp_path, url, queued=10, seconds=1.0, workers=(1, 2))
        for database in (sqlite, postgresql):
            assert set(database.claims) == {(1, 1), (1, 8), (2, 1), (2, 8)}
            assert set(database.jobs) == {1, 2}
            assert all(claims > 0 for claims in database.claims.values()), database
            for workers in (1, 2):
                # One job a claim without batching; batches take several.
                single, batched = (workers, 1), (workers, 8)
                assert database.claimed_per_s[single] == database.claims_per_s[single]
                assert database.claimed_per_s[batched] > database.claims_per_s[batched]
            assert all(jobs > 0 for jobs in database.jobs.values()), database
            done, images = await succeeded_with_images(database.url)
            assert done >= sum(database.jobs.values()) and images == done
    section = Section(item="scale", title="")
    report(section, sqlite, postgresql, 10)
    names = [figure.name for figure in section.figures]
    assert names == [
        "claims, 1 worker",
        "claims, 1 worker, batches of up to 8 images",
        "claims, 2 workers",
        "claims, 2 workers, batches of up to 8 images",
        "overhead per job, 1 worker",
        "overhead per job, 2 workers",
    ]
    for figure in section.figures:
        assert figure.ratio is not None and figure.ratio > 0, figure
        assert figure.met is not None and figure.target, figure
