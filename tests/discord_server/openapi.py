"""Checks the bot's REST request bodies against Discord's official OpenAPI spec."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped, unused-ignore]
from referencing import Registry
from referencing.jsonschema import DRAFT202012

# discord/discord-api-spec, kept next to the repository (../shared).
DEFAULT_SPEC_PATH = Path(__file__).resolve().parents[2].parent / "shared" / "discord-openapi.json"

_SPEC_URI = "urn:discord-openapi"
_MAX_ERRORS_PER_REQUEST = 5


@dataclass(frozen=True)
class _Operation:
    template: str
    method: str
    pattern: re.Pattern[str]
    content_types: frozenset[str]


def _pointer_escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


# Snowflakes discord.py sends as ints where the spec says string (Discord accepts both):
# a DM's recipient, a reply's message reference, allowed mentions' users and roles.
_INT_SNOWFLAKES = ("recipient_id", "message_id", "channel_id", "guild_id")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def normalise_snowflakes(body: Any) -> Any:
    """discord.py sends `attachments[].id` as ints (files[n] indexes or existing ids), and a
    DM's `recipient_id`, a reply's `message_reference` ids and `allowed_mentions` ids too,
    where the spec says string snowflake; Discord accepts both, so only those are coerced."""
    if isinstance(body, list):
        return [normalise_snowflakes(item) for item in body]
    if not isinstance(body, dict):
        return body
    result = {key: normalise_snowflakes(value) for key, value in body.items()}
    attachments = result.get("attachments")
    if isinstance(attachments, list):
        result["attachments"] = [
            {**a, "id": str(a["id"])}
            if isinstance(a, dict)
            and isinstance(a.get("id"), int)
            and not isinstance(a["id"], bool)
            else a
            for a in attachments
        ]
    if _is_int(result.get("recipient_id")):
        result["recipient_id"] = str(result["recipient_id"])
    mentions = result.get("allowed_mentions")
    if isinstance(mentions, dict):
        result["allowed_mentions"] = {
            key: [str(v) if _is_int(v) else v for v in value]
            if key in ("users", "roles") and isinstance(value, list)
            else value
            for key, value in mentions.items()
        }
    reference = result.get("message_reference")
    if isinstance(reference, dict):
        result["message_reference"] = {
            key: str(value) if key in _INT_SNOWFLAKES and _is_int(value) else value
            for key, value in reference.items()
        }
    return result


def _location(error: Any) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)


def _rules_out_branch(error: Any, union: Any) -> bool:
    """True when the error shows the body was never meant for this union branch: its
    JSON type differs (e.g. the `null` branch) or its `type` tag is another one."""
    relative = list(error.absolute_path)[len(union.absolute_path) :]
    if not relative:
        return bool(error.validator == "type")
    return relative == ["type"] and error.validator in ("enum", "const")


def _most_relevant(error: Any) -> Any:
    """Descend through anyOf/oneOf failures into the branch the body was meant for.

    Discord's unions are tagged by a `type` field, so branches ruled out by their tag are
    discarded; of the rest, the one with the fewest (then deepest) errors wins.
    """
    while error.context:
        branches: dict[Any, list[Any]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        plausible = [
            errs for errs in branches.values() if not any(_rules_out_branch(e, error) for e in errs)
        ]
        chosen = min(
            plausible or branches.values(),
            key=lambda errs: (len(errs), -max(len(e.absolute_path) for e in errs)),
        )
        # Not best_match(): it would descend by its own rules and undo the choice above.
        error = max(chosen, key=lambda e: len(e.absolute_path))
    return error


def _describe(error: Any) -> str:
    deepest = _most_relevant(error)
    message = deepest.message
    shown = repr(deepest.instance)
    if len(shown) > 60:  # keep long values (2001-char contents) out of the report
        message = message.replace(shown, shown[:40] + "…")
    return f"{_location(deepest)}: {message}"


class OpenApiValidator:
    """Finds the spec operation for a request and validates its body.

    Compiled validators are cached per operation and content type; the spec (1.2 MB) is
    parsed once per process through `load()`.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        self._spec = spec
        self._registry: Registry[Any] = Registry().with_resource(
            _SPEC_URI, DRAFT202012.create_resource(spec)
        )
        self._validators: dict[tuple[str, str, str], Any] = {}
        operations = []
        for template, item in spec["paths"].items():
            regex = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
            for method, operation in item.items():
                if method == "parameters":
                    continue
                content = (operation.get("requestBody") or {}).get("content", {})
                operations.append(
                    _Operation(template, method.upper(), re.compile(regex), frozenset(content))
                )
        # Prefer literal segments: ".../messages/@original" over ".../messages/{message_id}".
        operations.sort(key=lambda op: op.template.count("{"))
        self._operations = operations

    @classmethod
    def load(cls, path: Path = DEFAULT_SPEC_PATH) -> OpenApiValidator | None:
        """The validator for the spec at `path`, or None when the file is absent."""
        return _load_cached(path.resolve())

    def find(self, method: str, path: str) -> _Operation | None:
        for operation in self._operations:
            if operation.method == method.upper() and operation.pattern.match(path):
                return operation
        return None

    def validate(self, method: str, path: str, body: Any, *, multipart: bool) -> list[str]:
        """Readable violations of the request body (empty when valid)."""
        operation = self.find(method, path)
        where = f"{method.upper()} {path}"
        if operation is None:
            return [f"{where}: no such operation in Discord's OpenAPI spec"]
        where = f"{method.upper()} {operation.template}"
        if body is None:
            return []
        if not operation.content_types:
            return [f"{where}: sent a body but the operation takes none"]
        content_type = "application/json"
        if multipart and "multipart/form-data" in operation.content_types:
            content_type = "multipart/form-data"
        if content_type not in operation.content_types:
            return [f"{where}: {content_type} body not accepted"]
        validator = self._validator(operation, content_type)
        errors = sorted(
            validator.iter_errors(normalise_snowflakes(body)),
            key=lambda e: list(map(str, e.absolute_path)),
        )
        return [f"{where}: {_describe(e)}" for e in errors[:_MAX_ERRORS_PER_REQUEST]]

    def _validator(self, operation: _Operation, content_type: str) -> Any:
        key = (operation.template, operation.method, content_type)
        validator = self._validators.get(key)
        if validator is None:
            pointer = "/".join(
                _pointer_escape(p)
                for p in (
                    "paths",
                    operation.template,
                    operation.method.lower(),
                    "requestBody",
                    "content",
                    content_type,
                    "schema",
                )
            )
            schema = {"$ref": f"{_SPEC_URI}#/{pointer}"}
            validator = jsonschema.Draft202012Validator(schema, registry=self._registry)
            self._validators[key] = validator
        return validator


@functools.cache
def _load_cached(path: Path) -> OpenApiValidator | None:
    if not path.is_file():
        return None
    with path.open(encoding="utf-8") as fp:
        return OpenApiValidator(json.load(fp))
