"""What the HTTP API reads and changes, built once in bot.app and kept on the application."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from ..config import Config
from ..core import Core
from ..core.services import ApiKeyStore, HealthStore, QuotaStore, UserStore
from ..jobs.service import JobService
from ..moderation.service import Moderation

# How the API's jobs and audit entries name their client.
CLIENT = "http"


@dataclass(frozen=True)
class ApiServices:
    """What the HTTP API reads and changes, built once in bot.app."""

    config: Config
    jobs: JobService
    # The door every new job passes and the actions on jobs (bot.core).
    core: Core
    keys: ApiKeyStore
    users: UserStore
    quotas: QuotaStore
    moderation: Moderation
    health: HealthStore


SERVICES = web.AppKey("services", ApiServices)


def services_of(request: web.Request) -> ApiServices:
    return request.app[SERVICES]
