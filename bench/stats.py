"""Small statistics over the few samples a benchmark takes."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(samples: Sequence[float], share: float) -> float:
    """The `share` (0-1) percentile, linearly interpolated between the nearest samples."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    position = share * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples) if samples else math.nan


def ratio(numerator: float, denominator: float) -> float | None:
    if denominator == 0 or math.isnan(numerator) or math.isnan(denominator):
        return None
    return numerator / denominator


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def mb(size: int | None) -> float | None:
    return None if size is None else round(size / 2**20, 1)
