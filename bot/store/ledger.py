"""The usage ledger: reserve an estimate at enqueue, settle or refund it at the end.

Each function works in the caller's transaction, next to the job change it
accounts for, and writes its own audit entry there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Subquery, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..quota import Estimate, cost_of
from . import audit
from .models import Job, Reservation, UsageEntry


@dataclass(frozen=True)
class Pricing:
    price_per_gpu_hour: float = 0.0
    currency: str = "USD"

    def cost(self, gpu_seconds: float) -> float:
        return cost_of(gpu_seconds, self.price_per_gpu_hour)


FREE = Pricing()


def reserve(session: AsyncSession, job: Job, estimate: Estimate) -> None:
    session.add(
        Reservation(
            job_id=job.id,
            user_id=job.user_id,
            images=estimate.images,
            gpu_seconds=estimate.gpu_seconds,
            cost=estimate.cost,
        )
    )
    _audit(
        session,
        "quota.reserve",
        job,
        {
            "images": estimate.images,
            "gpu_seconds": round(estimate.gpu_seconds, 3),
            "cost": estimate.cost,
            "lane": job.lane,
        },
    )


async def settle(
    session: AsyncSession, job: Job, images: int, pricing: Pricing
) -> UsageEntry | None:
    """Turn the job's reservation into a ledger entry of its measured GPU time.

    None when the job holds no reservation: it was queued without quotas, or is
    settled already (so a job is never charged twice).
    """
    gpu_seconds = job.gpu_seconds or 0.0
    reservation = await _release(session, job)
    if reservation is None:
        return None
    entry = UsageEntry(
        job_id=job.id,
        user_id=job.user_id,
        images=images,
        gpu_seconds=gpu_seconds,
        cost=pricing.cost(gpu_seconds),
        currency=pricing.currency,
        lane=job.lane,
    )
    session.add(entry)
    _audit(
        session,
        "quota.settle",
        job,
        {
            "images": images,
            "gpu_seconds": round(gpu_seconds, 3),
            "cost": entry.cost,
            "currency": pricing.currency,
            "lane": job.lane,
            "reserved_gpu_seconds": round(reservation.gpu_seconds, 3),
        },
    )
    return entry


async def refund(session: AsyncSession, job: Job) -> None:
    """Release a failed or cancelled job's reservation: it is never charged."""
    reservation = await _release(session, job)
    if reservation is None:
        return
    _audit(
        session,
        "quota.refund",
        job,
        {
            "images": reservation.images,
            "gpu_seconds": round(reservation.gpu_seconds, 3),
            "cost": reservation.cost,
        },
    )


def _audit(session: AsyncSession, action: str, job: Job, params: dict[str, Any]) -> None:
    """The ledger's audit entry for `job`: by its member, where the job was asked for."""
    audit.record(
        session,
        action,
        "ok",
        actor_id=job.user_id,
        guild_id=job.guild_id,
        channel_id=job.channel_id,
        target=job.id,
        params=params,
    )


@dataclass(frozen=True)
class _Released:
    """What a job's reservation held, as it is deleted."""

    images: int
    gpu_seconds: float
    cost: float


async def _release(session: AsyncSession, job: Job) -> _Released | None:
    """Delete the job's reservation in one statement; None when it holds none."""
    row = (
        await session.execute(
            delete(Reservation)
            .where(Reservation.job_id == job.id)
            .returning(Reservation.images, Reservation.gpu_seconds, Reservation.cost)
        )
    ).one_or_none()
    return None if row is None else _Released(row.images, row.gpu_seconds, row.cost)


def reserved(user_id: int) -> Subquery:
    """One row: the images, GPU seconds and cost of a member's open reservations
    (their queued and running jobs)."""
    return _totals(Reservation, Reservation.user_id == user_id)


def charged_since(user_id: int, since: datetime) -> Subquery:
    """One row: what a member's settled jobs used since `since` (both lanes)."""
    return _totals(UsageEntry, UsageEntry.user_id == user_id, UsageEntry.at >= since)


def _totals(rows: type[Reservation] | type[UsageEntry], *where: ColumnElement[bool]) -> Subquery:
    return (
        select(
            func.coalesce(func.sum(rows.images), 0).label("images"),
            func.coalesce(func.sum(rows.gpu_seconds), 0.0).label("gpu_seconds"),
            func.coalesce(func.sum(rows.cost), 0.0).label("cost"),
        )
        .where(*where)
        .subquery()
    )
