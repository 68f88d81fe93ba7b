"""Message and attachment storage, built from the bodies the bot sends."""

from __future__ import annotations

import io
import mimetypes
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

from PIL import Image

from .models import FLAG_EPHEMERAL, FLAG_LOADING, JSON, Attachment, Message, Snowflakes, Upload
from .world import World, iso_timestamp

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class MessageError(ValueError):
    """A request body Discord would reject; carries Discord's error code."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


# Formats Discord reports a width and height for (it shows them inline).
_SIZED_FORMATS = ("JPEG", "GIF", "WEBP")


def _image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height as Discord reports them for an image attachment: from the PNG
    header, else from the header of a JPEG, GIF or WebP (nothing is decoded)."""
    if data[:8] == _PNG_SIGNATURE:
        if len(data) < 24:
            return None
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a huge declared size is only a warning here
            with Image.open(io.BytesIO(data), formats=_SIZED_FORMATS) as image:
                return image.size
    except Exception:  # not an image Discord would size
        return None


@dataclass
class _StoredMessage:
    id: int
    channel_id: int
    author_id: int
    message_type: int
    timestamp: str
    extra: JSON
    """Fields fixed at creation: webhook_id, application_id, interaction_metadata…"""
    interaction_id: int | None
    versions: list[Message] = field(default_factory=list)


class MessageStore:
    """Every message and attachment, with each message's full edit history."""

    def __init__(self, ids: Snowflakes, world: World) -> None:
        self.base_url = ""  # set once the HTTP site is bound
        self.attachments: dict[int, Attachment] = {}
        self._ids = ids
        self._world = world
        self._messages: dict[int, _StoredMessage] = {}

    # -- attachments ----------------------------------------------------------------------

    def add_attachment(
        self,
        channel_id: int,
        filename: str,
        data: bytes,
        content_type: str | None = None,
        description: str | None = None,
    ) -> Attachment:
        # discord.py uploads every file as application/octet-stream; Discord sniffs the
        # real type from the name, and so do we.
        if not content_type or content_type == "application/octet-stream":
            content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        attachment_id = self._ids.next()
        url = f"{self.base_url}/attachments/{channel_id}/{attachment_id}/{quote(filename)}"
        size = _image_size(data)
        attachment = Attachment(
            id=attachment_id,
            filename=filename,
            content_type=content_type,
            size=len(data),
            url=url,
            proxy_url=url,
            data=data,
            description=description,
            width=size[0] if size else None,
            height=size[1] if size else None,
        )
        self.attachments[attachment_id] = attachment
        return attachment

    def _resolve_attachments(
        self,
        channel_id: int,
        requested: list[JSON] | None,
        uploads: Sequence[Upload],
        existing: Sequence[Attachment],
    ) -> tuple[Attachment, ...]:
        """Apply Discord's rules: an `attachments` list names what stays (existing ids) and
        describes new uploads (id = files[n] index); without it, existing ones stay and
        every upload is added."""
        by_index = {u.index: u for u in uploads}
        kept_existing = {a.id: a for a in existing}
        result: list[Attachment] = []
        used: set[int] = set()
        if requested is None:
            result.extend(existing)
        else:
            for entry in requested:
                raw_id = entry.get("id")
                try:
                    ref = int(raw_id)  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    raise MessageError(400, 50035, f"attachments[].id {raw_id!r}") from None
                if ref in kept_existing:
                    result.append(kept_existing[ref])
                elif ref in by_index:
                    upload = by_index[ref]
                    used.add(ref)
                    result.append(
                        self.add_attachment(
                            channel_id,
                            entry.get("filename") or upload.filename,
                            upload.data,
                            upload.content_type,
                            entry.get("description"),
                        )
                    )
                else:
                    raise MessageError(
                        400, 50035, f"attachments[].id {ref} is neither kept nor uploaded"
                    )
        for upload in uploads:
            if upload.index not in used:
                result.append(
                    self.add_attachment(
                        channel_id, upload.filename, upload.data, upload.content_type
                    )
                )
        if len(result) > 10:
            raise MessageError(400, 50035, "a message can have at most 10 attachments")
        return tuple(result)

    # -- messages -------------------------------------------------------------------------

    def with_nonce(self, channel_id: int, nonce: str) -> Message | None:
        """The newest version of the channel's message created with `nonce`, if any."""
        for stored in self._messages.values():
            first = stored.versions[0]
            if stored.channel_id == channel_id and first.payload.get("nonce") == nonce:
                return stored.versions[-1]
        return None

    def create(
        self,
        channel_id: int,
        body: JSON,
        uploads: Sequence[Upload] = (),
        *,
        author_id: int,
        message_type: int = 0,
        extra: JSON | None = None,
        interaction_id: int | None = None,
        flags: int = 0,
    ) -> Message:
        stored = _StoredMessage(
            id=self._ids.next(),
            channel_id=channel_id,
            author_id=author_id,
            message_type=message_type,
            timestamp=iso_timestamp(),
            extra=dict(extra or {}),
            interaction_id=interaction_id,
        )
        attachments = self._resolve_attachments(channel_id, body.get("attachments"), uploads, ())
        version = self._make_version(
            stored,
            content=body.get("content") or "",
            embeds=body.get("embeds") or [],
            components=body.get("components") or [],
            attachments=attachments,
            flags=(body.get("flags") or 0) | flags,
            edited=False,
            extra_fields={
                k: body[k] for k in ("tts", "message_reference", "nonce", "poll") if k in body
            },
        )
        self._messages[stored.id] = stored
        stored.versions.append(version)
        return version

    def edit(self, message_id: int, body: JSON, uploads: Sequence[Upload] = ()) -> Message:
        """Apply a PATCH; keys absent from `body` keep their value. An edit ends "thinking"."""
        stored = self._stored(message_id)
        current = stored.versions[-1]
        attachments = self._resolve_attachments(
            stored.channel_id, body.get("attachments"), uploads, current.attachments
        )
        flags = current.flags if body.get("flags") is None else body["flags"]
        version = self._make_version(
            stored,
            content=(body.get("content") or "") if "content" in body else current.content,
            embeds=(body.get("embeds") or []) if "embeds" in body else list(current.embeds),
            components=(
                (body.get("components") or []) if "components" in body else list(current.components)
            ),
            attachments=attachments,
            flags=(flags | (current.flags & FLAG_EPHEMERAL)) & ~FLAG_LOADING,
            edited=True,
            extra_fields={},
        )
        stored.versions.append(version)
        return version

    def delete(self, message_id: int) -> Message:
        stored = self._stored(message_id)
        version = replace(
            stored.versions[-1],
            deleted=True,
            version=len(stored.versions),
            created_at=time.monotonic(),
        )
        stored.versions.append(version)
        return version

    def latest(self, message_id: int) -> Message | None:
        stored = self._messages.get(message_id)
        return stored.versions[-1] if stored else None

    def versions(self, message_id: int) -> list[Message]:
        stored = self._messages.get(message_id)
        return list(stored.versions) if stored else []

    def live(self, message_id: int) -> Message | None:
        message = self.latest(message_id)
        return None if message is None or message.deleted else message

    def channel_messages(self, channel_id: int) -> list[Message]:
        """Visible (non-ephemeral, not deleted) messages of a channel, oldest first."""
        result = []
        for stored in self._messages.values():
            latest = stored.versions[-1]
            if stored.channel_id == channel_id and not latest.deleted and not latest.ephemeral:
                result.append(latest)
        return result

    def _stored(self, message_id: int) -> _StoredMessage:
        stored = self._messages.get(message_id)
        if stored is None or stored.versions[-1].deleted:
            raise MessageError(404, 10008, "Unknown Message")
        return stored

    def _make_version(
        self,
        stored: _StoredMessage,
        *,
        content: str,
        embeds: list[JSON],
        components: list[JSON],
        attachments: tuple[Attachment, ...],
        flags: int,
        edited: bool,
        extra_fields: JSON,
    ) -> Message:
        if len(content) > 2000:
            raise MessageError(400, 50035, "content must be 2000 or fewer in length")
        if len(embeds) > 10:
            raise MessageError(400, 50035, "embeds must have 10 or fewer items")
        embeds = [self._normalise_embed(e, attachments) for e in embeds]
        previous = stored.versions[-1].payload if stored.versions else {}
        payload: JSON = {
            "id": str(stored.id),
            "type": stored.message_type,
            "channel_id": str(stored.channel_id),
            "author": self._world.user_payload(stored.author_id),
            "content": content,
            "timestamp": stored.timestamp,
            "edited_timestamp": iso_timestamp() if edited else None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [a.to_payload() for a in attachments],
            "embeds": embeds,
            "components": components,
            "pinned": False,
            "flags": flags,
            **{k: v for k, v in previous.items() if k in ("tts", "message_reference", "nonce")},
            **extra_fields,
            **stored.extra,
        }
        return Message(
            id=stored.id,
            channel_id=stored.channel_id,
            author_id=stored.author_id,
            content=content,
            embeds=tuple(embeds),
            components=tuple(components),
            attachments=attachments,
            flags=flags,
            version=len(stored.versions),
            created_at=time.monotonic(),
            interaction_id=stored.interaction_id,
            payload=payload,
        )

    @staticmethod
    def _normalise_embed(embed: JSON, attachments: tuple[Attachment, ...]) -> JSON:
        """Discord fills in `type` and turns attachment://name into the attachment's URL."""
        result: dict[str, Any] = {"type": "rich", **embed}
        by_name = {a.filename: a for a in attachments}
        for key in ("image", "thumbnail"):
            media = result.get(key)
            if isinstance(media, dict) and str(media.get("url", "")).startswith("attachment://"):
                attachment = by_name.get(media["url"].removeprefix("attachment://"))
                if attachment is not None:
                    result[key] = {
                        "url": attachment.url,
                        "proxy_url": attachment.proxy_url,
                        "width": attachment.width,
                        "height": attachment.height,
                    }
        return result
