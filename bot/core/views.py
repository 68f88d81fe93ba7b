"""The stored records a door reads, named here so the doors need not import the store.

A door shows jobs and outputs as the store keeps them (read-only; every change
goes through a core service), so these are the store's own types under the core's
name. Their states and lanes are enums the doors render.
"""

from __future__ import annotations

from ..store.models import Job, JobState, Lane, Output

__all__ = ["Job", "JobState", "Lane", "Output"]
