"""Quota arithmetic: pure functions over limits, usage and a job's estimate.

No Discord, no SQL: the store gathers the numbers inside one transaction and
asks `check` whether a job fits; the answer says which limit, what is left
and when it resets, in words a member can read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo

_T = TypeVar("_T", int, float)


@dataclass(frozen=True)
class Limits:
    """Per-day limits; None means unlimited."""

    images_per_day: int | None = None
    gpu_seconds_per_day: float | None = None
    cost_per_day: float | None = None
    jobs_queued: int | None = None

    def overridden_by(self, other: Limits) -> Limits:
        """`other`'s set values win; its unset (None) ones inherit ours."""
        return Limits(
            images_per_day=_pick(other.images_per_day, self.images_per_day),
            gpu_seconds_per_day=_pick(other.gpu_seconds_per_day, self.gpu_seconds_per_day),
            cost_per_day=_pick(other.cost_per_day, self.cost_per_day),
            jobs_queued=_pick(other.jobs_queued, self.jobs_queued),
        )


def _pick(preferred: _T | None, fallback: _T | None) -> _T | None:
    return fallback if preferred is None else preferred


def _most_generous(values: list[float | None]) -> float | None:
    """Unlimited (None) beats any number; otherwise the largest number wins."""
    if not values or any(value is None for value in values):
        return None
    return max(value for value in values if value is not None)


def effective_limits(default: Limits, roles: list[Limits], user: Limits | None) -> Limits:
    """A user override beats role overrides, which beat the default.

    Of several roles, each limit takes its most generous value: a member who
    has a 'Patron' role should not lose by also having 'Member'.
    """
    limits = default
    if roles:
        merged = [default.overridden_by(role) for role in roles]
        images = _most_generous([m.images_per_day for m in merged])
        queued = _most_generous([m.jobs_queued for m in merged])
        limits = Limits(
            images_per_day=None if images is None else int(images),
            gpu_seconds_per_day=_most_generous([m.gpu_seconds_per_day for m in merged]),
            cost_per_day=_most_generous([m.cost_per_day for m in merged]),
            jobs_queued=None if queued is None else int(queued),
        )
    return limits.overridden_by(user) if user is not None else limits


@dataclass(frozen=True)
class Usage:
    """What counts against today's limits: settled jobs plus open reservations."""

    images: int = 0
    gpu_seconds: float = 0.0
    cost: float = 0.0
    jobs_queued: int = 0


@dataclass(frozen=True)
class Estimate:
    images: int
    gpu_seconds: float
    cost: float


@dataclass(frozen=True)
class OverQuota:
    limit: str  # which limit, in words
    left: str  # what is left of it, in words
    resets_at: datetime | None  # None for the queued-jobs limit

    def message(self) -> str:
        # `{until}`: the door fills it with `resets_at` in its own format.
        reset = (
            " It resets {until}."
            if self.resets_at is not None
            else " Wait for one of your jobs to finish."
        )
        return f"This would go over your {self.limit}: {self.left}.{reset}"


def day_bounds(now: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """Start and end of the quota day that contains `now`, in the configured zone."""
    local_day: date = now.astimezone(zone).date()
    start = datetime.combine(local_day, time(), tzinfo=zone)
    return start, datetime.combine(local_day + timedelta(days=1), time(), tzinfo=zone)


def cost_of(gpu_seconds: float, price_per_gpu_hour: float) -> float:
    return gpu_seconds * price_per_gpu_hour / 3600.0


def check(
    limits: Limits, usage: Usage, estimate: Estimate, resets_at: datetime, currency: str
) -> OverQuota | None:
    """None when the job fits every limit; otherwise the first limit it breaks."""
    if limits.jobs_queued is not None and usage.jobs_queued + 1 > limits.jobs_queued:
        return OverQuota(
            f"limit of {limits.jobs_queued} queued job(s)",
            f"you have {usage.jobs_queued} waiting or running",
            None,
        )
    if limits.images_per_day is not None and usage.images + estimate.images > limits.images_per_day:
        left = max(0, limits.images_per_day - usage.images)
        return OverQuota(
            f"daily limit of {limits.images_per_day} images",
            f"{left} left today, this job needs {estimate.images}",
            resets_at,
        )
    if (
        limits.gpu_seconds_per_day is not None
        and usage.gpu_seconds + estimate.gpu_seconds > limits.gpu_seconds_per_day
    ):
        seconds_left = max(0.0, limits.gpu_seconds_per_day - usage.gpu_seconds)
        return OverQuota(
            f"daily limit of {limits.gpu_seconds_per_day:g} GPU seconds",
            f"{seconds_left:.1f} s left today, this job needs about {estimate.gpu_seconds:.1f} s",
            resets_at,
        )
    if limits.cost_per_day is not None and usage.cost + estimate.cost > limits.cost_per_day:
        money_left = max(0.0, limits.cost_per_day - usage.cost)
        return OverQuota(
            f"daily spending limit of {limits.cost_per_day:.2f} {currency}",
            f"{money_left:.4f} {currency} left today, this job costs about {estimate.cost:.4f}",
            resets_at,
        )
    return None


def summary(limits: Limits, usage: Usage, resets_at: datetime, currency: str) -> str:
    """A member's standing today, one line per limit with what is left, ready to show (/me)."""

    def line(name: str, used: float, limit: float | None, spec: str) -> str:
        if limit is None:
            return f"{name}: {used:{spec}} (no limit)"
        return f"{name}: {used:{spec}} of {limit:{spec}}, {max(0.0, limit - used):{spec}} left"

    return "\n".join(
        [
            line("Images today", usage.images, limits.images_per_day, "g"),
            line("GPU seconds today", round(usage.gpu_seconds, 1), limits.gpu_seconds_per_day, "g"),
            line(f"Cost today ({currency})", usage.cost, limits.cost_per_day, ".2f"),
            line("Jobs queued or running", usage.jobs_queued, limits.jobs_queued, "g"),
            f"Daily limits reset <t:{int(resets_at.timestamp())}:R>.",
        ]
    )
