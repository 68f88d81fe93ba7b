"""The result cache's rows: a member's earlier job with the same result key, the jobs
answered from it (made succeeded with copies of its images, nothing charged) and the
jobs that wait for an identical one in flight (bot.jobs.cache holds the rules)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm.attributes import set_committed_value

from . import audit, ledger
from .jobs import NewJob, NewOutput, _transition, settle_command, upsert_user
from .models import Job, JobState, Output, utcnow

# A job whose result may answer another, or that is making one.
IN_FLIGHT = (JobState.QUEUED, JobState.RUNNING)


@dataclass(frozen=True)
class Copied:
    """A job to answer from `source`, with the copies of its images made for it."""

    new: NewJob
    source: Job
    outputs: list[NewOutput]


class CacheStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def job(self, job_id: str) -> Job | None:
        async with self._sessions() as session:
            return await session.get(Job, job_id)

    async def succeeded(self, user_id: int, key: str) -> Job | None:
        """The member's newest succeeded job with the result `key`, its images loaded,
        made with the model's checkpoint as its latest run recorded it; None without one."""
        async with self._sessions() as session:
            job = await session.scalar(
                select(Job)
                .where(
                    Job.user_id == user_id,
                    Job.result_key == key,
                    Job.state == JobState.SUCCEEDED,
                )
                .order_by(Job.finished_at.desc(), Job.id.desc())
                .limit(1)
            )
            if job is None or not job.outputs:
                return None
            current = await _checkpoint_of(session, job.model)
            made_with = job.outputs[0].recipe.get("checkpoint_sha256")
            return job if current is None or made_with == current else None

    async def in_flight(self, user_id: int, key: str) -> str | None:
        """The member's oldest queued or running job with the result `key` that makes its
        own images (not itself waiting for another); None without one."""
        async with self._sessions() as session:
            return await session.scalar(
                select(Job.id)
                .where(
                    Job.user_id == user_id,
                    Job.result_key == key,
                    Job.state.in_(IN_FLIGHT),
                    Job.cached_from.is_(None),
                )
                .order_by(Job.created_at, Job.id)
                .limit(1)
            )

    async def create_cached(self, copies: Sequence[Copied]) -> list[Job]:
        """Write the jobs of one command as answered from the cache, in one transaction
        with their audit entries (`job.cached`) and the command's settlement: succeeded,
        no GPU time, no reservation and nothing in the ledger."""
        first = copies[0].new.requester
        async with self._sessions.begin() as session:
            await upsert_user(session, first.user_id, first.user_name)
            jobs = [_add_cached(session, copy) for copy in copies]
            await settle_command(
                session, first, "answered from the cache " + " ".join(j.id for j in jobs)
            )
            return jobs

    async def waiters(self, source_id: str) -> list[Job]:
        """The queued jobs waiting for `source_id`'s result."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(Job)
                .where(Job.cached_from == source_id, Job.state == JobState.QUEUED)
                .order_by(Job.created_at, Job.id)
            )
            return list(rows.all())

    async def sources_waited_for(self) -> list[str]:
        """The jobs that queued jobs wait for (at start: some may have ended meanwhile)."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(Job.cached_from)
                .where(Job.cached_from.is_not(None), Job.state == JobState.QUEUED)
                .distinct()
            )
            return [source for source in rows.all() if source is not None]

    async def answer_waiter(self, waiter: Job, source: Job, outputs: list[NewOutput]) -> Job | None:
        """A waiting job answered from its source's result: queued -> succeeded with the
        copies of its images, its reservation refunded (nothing charged) and `job.cached`
        audited, in one transaction; None when it is no longer waiting (cancelled)."""
        async with self._sessions.begin() as session:
            still = await session.scalar(
                select(Job.id).where(
                    Job.id == waiter.id,
                    Job.state == JobState.QUEUED,
                    Job.cached_from == source.id,
                )
            )
            if still is None:
                return None
            images = [Output(job_id=waiter.id, **vars(output)) for output in outputs]
            session.add_all(images)
            job = await _transition(
                session, waiter.id, JobState.QUEUED, JobState.SUCCEEDED, "cached", gpu_seconds=0.0
            )
            set_committed_value(job, "outputs", sorted(images, key=lambda image: image.index))
            await ledger.refund(session, job)
            _audit_cached(session, job, source, len(images))
            return job

    async def release(self, source_id: str) -> list[str]:
        """The jobs waiting for `source_id`, which ended without a result they can use,
        run themselves: they wait no longer and are claimed as any queued job."""
        async with self._sessions.begin() as session:
            released = await session.scalars(
                update(Job)
                .where(Job.cached_from == source_id, Job.state == JobState.QUEUED)
                .values(cached_from=None)
                .returning(Job.id)
                .execution_options(synchronize_session=False)
            )
            ids = list(released.all())
            for job_id in ids:
                audit.record(
                    session, "job.cache_released", "ok", target=job_id, params={"source": source_id}
                )
            return ids


def _add_cached(session: AsyncSession, copy: Copied) -> Job:
    new, now = copy.new, utcnow()
    requester = new.requester
    job = Job(
        id=new.job_id,
        state=JobState.SUCCEEDED,
        spec=new.spec,
        model=new.model,
        seeds=new.seeds,
        gpu_seconds=0.0,
        device=copy.source.device,
        created_at=now,
        started_at=now,
        finished_at=now,
        **requester.job_columns(),
        # An HTTP job's answer is read from the stored job: nothing to push (as _transition).
        delivered_at=None if requester.client == "discord" else now,
        result_key=new.result_key,
        cached_from=copy.source.id,
        outputs=[Output(job_id=new.job_id, **vars(output)) for output in copy.outputs],
    )
    session.add(job)
    _audit_cached(session, job, copy.source, len(copy.outputs))
    return job


def _audit_cached(session: AsyncSession, job: Job, source: Job, images: int) -> None:
    audit.record(
        session,
        "job.cached",
        "ok",
        actor_id=job.user_id,
        guild_id=job.guild_id,
        channel_id=job.channel_id,
        target=job.id,
        params={
            "source": source.id,
            "images": images,
            "model": job.model,
            **({"client": job.client, "key_id": job.api_key_id} if job.client != "discord" else {}),
        },
    )


async def _checkpoint_of(session: AsyncSession, model: str) -> str | None:
    """The checkpoint hash the model's latest run (not a cached answer) recorded in its
    images' recipes: a checkpoint replaced under the same name shows here from its first
    run on, and results made with the old one are no longer reused."""
    recipe = await session.scalar(
        select(Output.recipe)
        .join(Job, Job.id == Output.job_id)
        .where(Job.model == model, Job.state == JobState.SUCCEEDED, Job.cached_from.is_(None))
        .order_by(Job.finished_at.desc(), Job.id.desc())
        .limit(1)
    )
    value = None if recipe is None else recipe.get("checkpoint_sha256")
    return value if isinstance(value, str) else None
