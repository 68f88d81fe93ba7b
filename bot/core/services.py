"""The stored services the doors call, named here so the doors need not import the store.

Member settings, quotas, server blocklists, the command journal, API keys, the audit
log and health: a door calls them as they are (their methods are the rules; each
change is compare-and-set and audited in its own transaction). New jobs, actions
on jobs and deliveries go through the core's own services instead (door, acting,
deliveries). Keeping every door-facing service in this one module is the seam a
second store (PostgreSQL, issue #20) has to keep.
"""

from __future__ import annotations

from ..store.api_keys import ApiKeyStore
from ..store.audit import AuditLog
from ..store.commands import CommandStore
from ..store.guilds import GuildStore
from ..store.health import DatabaseHeartbeat, HealthStore
from ..store.jobs import JobStore
from ..store.quotas import QuotaStore
from ..store.users import UserStore

__all__ = [
    "ApiKeyStore",
    "AuditLog",
    "CommandStore",
    "DatabaseHeartbeat",
    "GuildStore",
    "HealthStore",
    "JobStore",
    "QuotaStore",
    "UserStore",
]
