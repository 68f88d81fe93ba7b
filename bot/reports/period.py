"""Report periods written the way admins type them: 7d, 24h, 90m, 2w."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([mhdw])")


def parse_duration(text: str) -> timedelta:
    """'7d' -> 7 days; raises ValueError with the accepted forms."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or float(match[1]) <= 0:
        raise ValueError(f"{text!r} is not a duration: write e.g. 90m, 24h, 7d or 2w")
    return timedelta(**{_UNITS[match[2]]: float(match[1])})
