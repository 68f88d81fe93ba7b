"""A local Discord-compatible server (gateway + REST + CDN) for tests of the real bot."""

from .interactions import InteractionHandle
from .models import Attachment, CallbackRecord, Fault, Message, RequestRecord, Upload
from .server import LocalDiscord, OtherGuild

__all__ = [
    "Attachment",
    "CallbackRecord",
    "Fault",
    "InteractionHandle",
    "LocalDiscord",
    "Message",
    "OtherGuild",
    "RequestRecord",
    "Upload",
]
