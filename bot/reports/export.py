"""CSV exports of the usage ledger and the audit log, for spreadsheets."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence

from ..store.models import AuditEntry, UsageEntry

USAGE_COLUMNS = ("at", "job_id", "user_id", "lane", "images", "gpu_seconds", "cost", "currency")
AUDIT_COLUMNS = (
    "at",
    "actor_id",
    "guild_id",
    "channel_id",
    "action",
    "target",
    "outcome",
    "params",
)


def usage_csv(entries: Iterable[UsageEntry]) -> bytes:
    return _csv(
        USAGE_COLUMNS,
        (
            (
                e.at.isoformat(),
                e.job_id,
                e.user_id,
                e.lane,
                e.images,
                e.gpu_seconds,
                e.cost,
                e.currency,
            )
            for e in entries
        ),
    )


def audit_csv(entries: Iterable[AuditEntry]) -> bytes:
    return _csv(
        AUDIT_COLUMNS,
        (
            (
                e.at.isoformat(),
                e.actor_id,
                e.guild_id,
                e.channel_id,
                e.action,
                e.target,
                e.outcome,
                json.dumps(e.params, sort_keys=True),
            )
            for e in entries
        ),
    )


def _csv(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> bytes:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(columns)
    writer.writerows(rows)
    # UTF-8 with a byte-order mark, so spreadsheet programs read names right.
    return text.getvalue().encode("utf-8-sig")
