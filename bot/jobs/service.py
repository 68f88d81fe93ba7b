"""The job service: the one object the doors and the CLI hold, built from intake
(bot.jobs.intake: submit, places, pace, cancel requests) and the worker pool
(bot.jobs.pool: claims, engines, screening), which share only the listener fan-out
(bot.jobs.events) and the narrow `Workers` seam.

Discord is one client of this service and the `atelier generate` CLI another; neither
knows how jobs are stored or run. Each method here is one line into intake or the pool.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path

from engine.protocol import LoraSpec, ModelSpec, Status

from ..blobs import Blobs
from ..blobs.local import LocalBlobs
from ..config import QueueConfig, WorkerConfig
from ..moderation.images import ImageModerationConfig
from ..store.cache import CacheStore
from ..store.jobs import JobStore, Requester
from ..store.quotas import QuotaStore
from .cache import ResultCache
from .engine_client import EngineProcess
from .events import JobEvents, JobListener
from .fair_queue import FairQueue
from .intake import (
    CANCEL_WAIT_SECONDS,
    CancelOutcome,
    JobIntake,
    QueueFull,
    QueuePlace,
    Submitted,
)
from .pace import Pace
from .pool import WorkerPool
from .spec import JobSpec

__all__ = ["CancelOutcome", "JobListener", "JobService", "QueueFull", "QueuePlace", "Submitted"]


class JobService:
    def __init__(
        self,
        *,
        store: JobStore,
        data_dir: Path,
        engines: list[EngineProcess],
        job_timeout: float,
        models: dict[str, ModelSpec],
        default_model: str,
        preview_every: int = 0,
        quotas: QuotaStore | None = None,
        queue: QueueConfig | None = None,
        batch_images: dict[str, int] | None = None,
        moderation: ImageModerationConfig | None = None,
        worker: WorkerConfig | None = None,
        cache: CacheStore | None = None,
        events: JobEvents | None = None,
        blobs: Blobs | None = None,
        loras: Mapping[str, LoraSpec] | None = None,
    ) -> None:
        self.models = models
        self.default_model = default_model
        # Where images and uploads are kept (`[storage] backend`); data_dir by default.
        self.blobs = blobs or LocalBlobs(data_dir)
        queue = queue or QueueConfig()
        # In-process by default; bot.jobs.relay.SharedEvents where processes share the
        # database (bot.wiring.build_events).
        self.events = events = events or JobEvents()
        fair = FairQueue.of(queue, quotas)
        worker = worker or WorkerConfig()
        self.pool = WorkerPool(
            store=store,
            events=events,
            fair=fair,
            engines=engines,
            data_dir=data_dir,
            job_timeout=job_timeout,
            preview_every=preview_every,
            batch_images=batch_images,
            moderation=moderation,
            blobs=self.blobs,
            # Its engines serve the configured models: it claims no other's jobs.
            models=frozenset(models),
            lease=timedelta(seconds=worker.lease_seconds),
            switch_after=timedelta(seconds=worker.switch_after_seconds),
        )
        # The result cache (`[cache] enabled`): None answers nothing from earlier results.
        self.cache = (
            None
            if cache is None
            else ResultCache(
                store=cache,
                models=models,
                blobs=self.blobs,
                events=events,
                wake=self.pool.jobs_queued,
                loras=loras,
            )
        )
        if self.cache is not None:
            events.add(self.cache)
        self.intake = JobIntake(
            store=store,
            events=events,
            workers=self.pool,
            fair=fair,
            engine_count=len(engines),
            quotas=quotas,
            queue=queue,
            cache=self.cache,
        )

    @property
    def store(self) -> JobStore:
        """The one store that intake and the pool both read."""
        return self.intake.store

    @store.setter
    def store(self, store: JobStore) -> None:
        # Intake and the pool each hold the store: one replaced here (before the service
        # starts, as a test holding a job's finish does) is replaced for both, never for
        # the facade alone.
        self.intake.store = store
        self.pool.store = store

    def add_listener(self, listener: JobListener) -> None:
        self.intake.add_listener(listener)

    # -- the pool: start and stop ----------------------------------------------------------

    async def start(self) -> None:
        await self.pool.start()
        if self.cache is not None:
            await self.cache.start()

    def start_workers(self) -> None:
        """Once the front doors can deliver: the workers, and the events of other processes."""
        self.events.start()
        self.pool.start_workers()

    def stop_claiming(self) -> None:
        self.pool.stop_claiming()

    async def stop(self, grace: float = 0.0) -> None:
        await self.pool.stop(grace)
        if self.cache is not None:
            await self.cache.stop()
        await self.events.stop()

    async def engine_status(self) -> list[tuple[str, Status | None]]:
        return await self.pool.engine_status()

    # -- intake ----------------------------------------------------------------------------

    async def submit(self, spec: JobSpec, requester: Requester) -> Submitted:
        return await self.intake.submit(spec, requester)

    async def submit_many(
        self,
        specs: Sequence[JobSpec],
        requester: Requester,
        message_ids: Sequence[int | None] = (),
        *,
        repeatable: bool = False,
    ) -> list[Submitted]:
        return await self.intake.submit_many(specs, requester, message_ids, repeatable=repeatable)

    async def queue_place(self, job_id: str) -> QueuePlace | None:
        return await self.intake.queue_place(job_id)

    async def queue_position(self, job_id: str) -> int | None:
        return await self.intake.queue_position(job_id)

    async def cancel(self, job_id: str, actor_id: int | None, *, refund: bool = False) -> bool:
        return await self.intake.cancel(job_id, actor_id, refund=refund)

    async def cancel_and_wait(
        self, job_id: str, actor_id: int | None, wait: float = CANCEL_WAIT_SECONDS
    ) -> CancelOutcome:
        return await self.intake.cancel_and_wait(job_id, actor_id, wait)

    async def pace(self) -> Pace:
        return await self.intake.pace()

    async def output_bytes(self, key: str) -> bytes | None:
        """A stored image by its key; None when it is gone."""
        return await self.blobs.read(key)
