"""The records and errors a door reads, named here so the doors need not import the store.

A door shows jobs, outputs and members as the store keeps them (read-only; every
change goes through a core service), so these are the store's own types under the
core's name.
"""

from __future__ import annotations

from ..store.api_keys import MAX_NAME_CHARS, KeyHolder, TooManyKeys
from ..store.audit import Actor
from ..store.commands import NewCommand
from ..store.jobs import JobNotFound, Requester
from ..store.models import Job, JobState, Lane, Output, QuotaScope, ReceivedCommand, utcnow
from ..store.users import UnfinishedJobs

__all__ = [
    "MAX_NAME_CHARS",
    "Actor",
    "Job",
    "JobNotFound",
    "JobState",
    "KeyHolder",
    "Lane",
    "NewCommand",
    "Output",
    "QuotaScope",
    "ReceivedCommand",
    "Requester",
    "TooManyKeys",
    "UnfinishedJobs",
    "utcnow",
]
