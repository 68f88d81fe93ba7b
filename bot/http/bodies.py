"""Reading a request's body into its pydantic model: JSON, or a form (multipart read in
memory within the body limit), with Stability's `text_prompts[i][text]` form fields."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, TypeVar

from aiohttp import BodyPartReader, hdrs, web
from pydantic import BaseModel, ValidationError

from .errors import ApiError, unreadable

BodyT = TypeVar("BodyT", bound=BaseModel)

_PROMPT_FIELD = re.compile(r"text_prompts\[([0-9]{1,4})\]\[(text|weight)\]")
# What decoding a body the client sent can raise beyond aiohttp's own HTTP errors: a
# multipart or JSON it cannot read (ValueError, UnicodeDecodeError among them), an
# unknown charset (LookupError), an unknown transfer encoding (RuntimeError), JSON
# nested past the parser's depth (RecursionError, a RuntimeError).
_UNDECODABLE = (ValueError, LookupError, RuntimeError)


async def read_json(request: web.Request, model: type[BodyT]) -> BodyT:
    try:
        data = await request.json()
    except _UNDECODABLE as error:
        raise unreadable(request, error, "not valid JSON (send application/json)") from None
    return _validated(model, data)


async def read_form(request: web.Request, model: type[BodyT], max_body_mb: float) -> BodyT:
    if request.content_type not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise ApiError(400, "bad_request", "body: send multipart/form-data")
    fields: Sequence[tuple[str, object]]
    try:
        if request.content_type == "multipart/form-data":
            fields = await _multipart(request, int(max_body_mb * 2**20))
        else:
            fields = list((await request.post()).items())
    except _UNDECODABLE as error:
        raise unreadable(
            request, error, "not a readable form (send multipart/form-data with named parts)"
        ) from None
    return _validated(model, _form_values(fields))


async def _multipart(request: web.Request, limit: int) -> list[tuple[str, str | bytes]]:
    """A multipart body's fields, read in memory within `limit` bytes: files as bytes,
    text as str. Not aiohttp's `request.post()`, which spools files to temporary files
    and leaves them open when a later part cannot be read."""
    reader = await request.multipart()
    fields: list[tuple[str, str | bytes]] = []
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.name is None:
            raise ValueError("a nested multipart, or a part without a name")
        raw = bytearray()
        while chunk := await part.read_chunk():
            raw += chunk
            if request.content.total_bytes > limit:
                raise web.HTTPRequestEntityTooLarge(limit, request.content.total_bytes)
        data = bytes(part.decode(raw))  # its transfer encoding (base64, quoted-printable)
        content_type = part.headers.get(hdrs.CONTENT_TYPE)
        if part.filename is None and (content_type is None or content_type.startswith("text/")):
            fields.append((part.name, data.decode(part.get_charset("utf-8"))))
        else:
            fields.append((part.name, data))
    return fields


def _validated(model: type[BodyT], data: Any) -> BodyT:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        field = field_name(first["loc"])
        name = "bad_request"
        if first["type"] == "multiple_of" and field in ("width", "height"):
            name = "invalid_height_or_width"
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "unknown field"
        elif first["type"] == "missing":
            message = "is required"
        raise ApiError(400, name, f"{field}: {message}") from None


def field_name(loc: tuple[int | str, ...]) -> str:
    """A validation error's place as the client wrote it: `text_prompts[1][text]`."""
    if not loc:
        return "body"
    head, *rest = loc
    return str(head) + "".join(f"[{part}]" for part in rest)


def _form_values(fields: Sequence[tuple[str, object]]) -> dict[str, Any]:
    """A form's fields as the request models read them: the
    `text_prompts[i][text|weight]` fields as a list in index order (a repeated field:
    the last wins, as in Stability's API)."""
    values: dict[str, Any] = {}
    prompts: dict[int, dict[str, Any]] = {}
    for name, content in fields:
        match = _PROMPT_FIELD.fullmatch(name)
        if match:
            prompts.setdefault(int(match[1]), {})[match[2]] = content
        else:
            values[name] = content
    if prompts:
        values["text_prompts"] = [prompts[index] for index in sorted(prompts)]
    values.pop("extras", None)  # accepted and ignored, as in JSON bodies
    return values
