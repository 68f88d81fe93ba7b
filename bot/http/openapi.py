"""The OpenAPI 3.1 document of the HTTP API, generated from the route table and the
pydantic models (bot.http.models): nothing in it is written by hand, so it cannot
drift from what the server validates and answers.

Multipart bodies are the models' schemas with `text_prompts` spelled the way
Stability's multipart requests spell it: `text_prompts[0][text]`,
`text_prompts[0][weight]`, and further indices by pattern.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp.typedefs import Handler
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from ..core.actions import BY_NAME

JSON = "application/json"
PNG = "image/png"
MULTIPART = "multipart/form-data"
REF = "#/components/schemas/{model}"
SECURITY_SCHEME = "STABILITY_API_KEY"
PROMPT_PATTERN = r"^text_prompts\[[0-9]+\]\[(text|weight)\]$"

# Response headers the API documents, by name.
HEADERS: dict[str, dict[str, Any]] = {
    "Retry-After": {
        "description": "Seconds to wait before trying again",
        "schema": {"type": "integer", "minimum": 1},
    },
    "Finish-Reason": {
        "description": "With Accept: image/png, the artifact's finishReason",
        "schema": {"type": "string", "enum": ["SUCCESS", "ERROR", "CONTENT_FILTERED"]},
    },
    "Seed": {
        "description": "With Accept: image/png, the image's seed",
        "schema": {"type": "integer"},
    },
    "Location": {"description": "Where the job's status is", "schema": {"type": "string"}},
    "Atelier-Cached-From": {
        "description": "Answered from the result cache: the earlier job whose stored images"
        " these are (nothing ran, nothing was charged)",
        "schema": {"type": "string"},
    },
}


@dataclass(frozen=True)
class Link:
    """A later call this reply makes possible: `parameter` of `operation_id` is found at
    `expression` (an OpenAPI runtime expression, e.g. `$response.body#/id`)."""

    operation_id: str
    parameter: str
    expression: str


@dataclass(frozen=True)
class Reply:
    description: str
    model: type[BaseModel] | None = None  # its JSON body
    png: bool = False  # image/png is the other content type on offer
    headers: tuple[str, ...] = ()
    links: tuple[Link, ...] = ()


@dataclass(frozen=True)
class Operation:
    """One route: how the server registers it and how the document describes it."""

    method: Literal["GET", "POST", "DELETE"]
    path: str
    operation_id: str
    summary: str
    tag: str
    handler: Handler  # serves it
    replies: dict[int, Reply]
    auth: bool = True
    json_body: type[BaseModel] | None = None
    form_body: type[BaseModel] | None = None
    body_required: bool = True
    accept_png: bool = False
    description: str = ""
    path_parameters: tuple[str, ...] = field(default=())


def openapi_document(
    operations: tuple[Operation, ...],
    title: str,
    version: str,
    description: str,
    engines: list[str],
) -> dict[str, Any]:
    """The document; `engines` (the configured models) are the values `engine_id` takes."""
    models: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = []
    for operation in operations:
        for body in (operation.json_body, operation.form_body):
            if body is not None:
                models.append((body, "validation"))
        models += [(r.model, "serialization") for r in operation.replies.values() if r.model]
    refs, definitions = models_json_schema(list(dict.fromkeys(models)), ref_template=REF)
    schemas: dict[str, Any] = definitions.get("$defs", {})
    for operation in operations:
        if operation.form_body is not None:
            name = _name(refs[(operation.form_body, "validation")])
            schemas[name] = form_schema(schemas[name], schemas)
    paths: dict[str, dict[str, Any]] = {}
    for operation in operations:
        paths.setdefault(operation.path, {})[operation.method.lower()] = _operation(
            operation, refs, engines
        )
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "`Bearer <key>` or just `<key>`; make a key in Discord"
                    " with /apikey create",
                }
            },
        },
    }


def form_schema(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """A model's schema as multipart fields: `text_prompts` flattened, no null branches
    (a form field is sent or left out)."""
    form = copy.deepcopy(schema)
    properties: dict[str, Any] = form["properties"]
    properties.pop("extras", None)  # an object: no form field holds one (ignored anyway)
    # Objects too: a form names its LoRAs in the prompt (`<lora:name:0.8>`).
    properties.pop("loras", None)
    prompts = properties.pop("text_prompts", None)
    if prompts is not None:
        prompt = schemas["TextPrompt"]["properties"]
        properties["text_prompts[0][text]"] = prompt["text"]
        properties["text_prompts[0][weight]"] = prompt["weight"]
        form["patternProperties"] = {PROMPT_PATTERN: {"type": "string"}}
        form["required"] = [
            "text_prompts[0][text]" if name == "text_prompts" else name
            for name in form.get("required", [])
        ]
    for name, value in list(properties.items()):
        properties[name] = _not_null(value)
    return form


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    branches = schema.get("anyOf")
    if not branches:
        return schema
    kept = [branch for branch in branches if branch.get("type") != "null"]
    if len(kept) != 1:
        return schema
    merged = {k: v for k, v in schema.items() if k != "anyOf"}
    if merged.get("default", 0) is None:
        del merged["default"]
    return {**kept[0], **merged}


def _name(ref: dict[str, Any]) -> str:
    return str(ref["$ref"]).rsplit("/", 1)[-1]


def _operation(operation: Operation, refs: dict[Any, Any], engines: list[str]) -> dict[str, Any]:
    document: dict[str, Any] = {
        "operationId": operation.operation_id,
        "summary": operation.summary,
        "tags": [operation.tag],
        "responses": {
            str(status): _reply(reply, refs) for status, reply in sorted(operation.replies.items())
        },
        "security": [{SECURITY_SCHEME: []}] if operation.auth else [],
    }
    if operation.description:
        document["description"] = operation.description
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": _path_schema(name, engines)}
        for name in operation.path_parameters
    ]
    if operation.accept_png:
        parameters.append(
            {
                "name": "Accept",
                "in": "header",
                "required": False,
                "description": "image/png for the image's bytes (one sample); JSON otherwise",
                "schema": {"type": "string", "enum": [JSON, PNG], "default": JSON},
            }
        )
    if parameters:
        document["parameters"] = parameters
    content: dict[str, Any] = {}
    if operation.json_body is not None:
        content[JSON] = {"schema": refs[(operation.json_body, "validation")]}
    if operation.form_body is not None:
        content[MULTIPART] = {"schema": refs[(operation.form_body, "validation")]}
    if content:
        document["requestBody"] = {"required": operation.body_required, "content": content}
    return document


def _path_schema(name: str, engines: list[str]) -> dict[str, Any]:
    if name == "engine_id":
        return {"type": "string", "enum": engines, "description": "A configured model"}
    if name == "action":  # the registry's: a new action is documented with its entry
        return {"type": "string", "enum": list(BY_NAME), "description": "What to do"}
    return {"type": "string"}


def _reply(reply: Reply, refs: dict[Any, Any]) -> dict[str, Any]:
    document: dict[str, Any] = {"description": reply.description}
    content: dict[str, Any] = {}
    if reply.model is not None:
        content[JSON] = {"schema": refs[(reply.model, "serialization")]}
    if reply.png:
        content[PNG] = {"schema": {"type": "string", "format": "binary"}}
    if content:
        document["content"] = content
    if reply.headers:
        document["headers"] = {name: HEADERS[name] for name in reply.headers}
    if reply.links:
        document["links"] = {
            link.operation_id: {
                "operationId": link.operation_id,
                "parameters": {link.parameter: link.expression},
            }
            for link in reply.links
        }
    return document
