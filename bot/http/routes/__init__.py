"""The route table: every operation of the API, in the order the OpenAPI document lists
them, and that document. A route needs a key unless its operation says `auth=False`."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from ..openapi import Operation, openapi_document
from . import account, actions, generation, health, jobs

OPERATIONS: tuple[Operation, ...] = (
    account.OPERATIONS
    + generation.OPERATIONS
    + jobs.OPERATIONS
    + actions.OPERATIONS
    + health.OPERATIONS
)


def _version() -> str:
    try:
        return version("atelier-bot")
    except PackageNotFoundError:
        return "0"


def api_document(engines: list[str]) -> dict[str, Any]:
    """The OpenAPI document served at /openapi.json; `engines`: the configured models."""
    return openapi_document(
        OPERATIONS,
        "Atelier HTTP API",
        _version(),
        "Stability REST API v1 compatible generation on a server's own Atelier, sharing its"
        " GPU queue, quotas, moderation and audit with Discord. A key made with /apikey"
        " create acts as its member.",
        engines,
    )
