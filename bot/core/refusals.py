"""Refusal: why the core did not do what a member asked, as data each door renders.

The core never writes presentation markup: a pause carries its end as a datetime
(Discord shows it with `<t:…>`, HTTP as ISO 8601), a rate limit its retry-after in
seconds. `reason` is one plain sentence for the member that says what to do instead;
a door may use it as it is or build its own from the fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class RefusalKind(StrEnum):
    """Why; the value is the `kind` the refusal's audit entry and the metrics hold."""

    RATE_LIMITED = "rate_limited"
    BANNED = "banned"
    PAUSED = "paused"
    BLOCKED = "moderation"  # a blocked term in one of the job's texts
    BAD_INPUT = "input"  # options, prompt or attachments that cannot make a job
    OVER_QUOTA = "quota"
    QUEUE_FULL = "queue_full"
    NOT_FOUND = "not_found"  # the job an action names is not stored
    NOT_READY = "not_ready"  # the job has not the state the action needs
    GONE = "gone"  # its images or inputs are no longer stored
    NOT_ALLOWED = "not_allowed"  # only the job's owner (or an admin) may do this
    TOO_LATE = "too_late"  # a cancel that met the job's end


@dataclass(frozen=True, kw_only=True)
class Refusal:
    kind: RefusalKind
    reason: str
    # Seconds until asking again may succeed (rate limit, quota, full queue), when known.
    retry_after: float | None = None
    # The limit that was reached, in words ("daily limit of 20 images"), for quotas.
    limit: str | None = None
    # When a quota resets, or a pause ends.
    until: datetime | None = None
    # The blocked term, for BLOCKED (the member's own words).
    term: str | None = None

    def with_time(self, shown: str) -> str:
        """The reason with its `{until}` written as `shown` (each door's own format)."""
        return self.reason.replace("{until}", shown)

    def plain(self) -> str:
        """The reason with its time as ISO 8601 (UTC), for the audit log and the HTTP API."""
        return self.reason if self.until is None else self.with_time(self.until.isoformat())


def paused(until: datetime) -> Refusal:
    """A member on a timed pause after repeated blocked prompts."""
    return Refusal(
        kind=RefusalKind.PAUSED,
        reason="You are paused until {until} after repeated blocked prompts.",
        until=until,
    )
