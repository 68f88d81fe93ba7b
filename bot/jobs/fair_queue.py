"""The waiting rows in fair order, one reading for intake's queue places and the worker
pool's claims (bot.jobs.scheduler holds the rules)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import timedelta

from ..config import QueueConfig
from ..store.jobs import QueuedRow
from ..store.models import utcnow
from ..store.quotas import QuotaStore
from .scheduler import EngineView, Waiting, choose_batch, fair_order


def waiting_of(row: QueuedRow, default_estimate: float) -> Waiting:
    return Waiting(
        job_id=row.job_id,
        user_id=row.user_id,
        model=row.model,
        lane=row.lane,
        queued_at=row.queued_at,
        images=row.images,
        estimate=row.estimate if row.estimate is not None else default_estimate,
        batch_key=row.batch_key,
    )


@dataclass(frozen=True)
class FairQueue:
    # The recent GPU time that counts towards a member's fair share.
    window: timedelta
    # A job's GPU seconds when it holds no estimate (no quotas).
    default_estimate: float

    @classmethod
    def of(cls, queue: QueueConfig, quotas: QuotaStore | None) -> FairQueue:
        default = quotas.rules.default_gpu_seconds if quotas else 1.0
        return cls(timedelta(minutes=queue.fair_share_minutes), default)

    def waiting(self, rows: Sequence[QueuedRow]) -> list[Waiting]:
        return [waiting_of(row, self.default_estimate) for row in rows]

    def order(self, rows: Sequence[QueuedRow], served: dict[int, float]) -> list[Waiting]:
        return fair_order(self.waiting(rows), served)

    def choose(
        self,
        rows: Sequence[QueuedRow],
        served: dict[int, float],
        engine: EngineView,
        max_images: int,
        skip: Collection[str] = (),
    ) -> list[str] | None:
        """A worker's choice (JobStore.claim's chooser): the ids of `engine`'s next batch
        of up to `max_images` images from `rows`, leaving out the jobs of `skip`; None
        when the heads of the queues that `rows` hold do not decide it (the store then
        reads more of them)."""
        waiting = self.waiting([row for row in rows if row.job_id not in skip])
        cut = {row.user_id for row in rows if row.more_behind}
        batch = choose_batch(waiting, served, cut, engine, utcnow(), max_images)
        return None if batch is None else [w.job_id for w in batch]
