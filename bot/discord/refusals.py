"""A core Refusal (bot.core.refusals) as Discord shows it: one private sentence."""

from __future__ import annotations

from datetime import datetime

from ..core.refusals import Refusal


def timestamp(when: datetime) -> str:
    """A time every member's Discord shows in their own zone, with how far off it is."""
    seconds = int(when.timestamp())
    return f"<t:{seconds}:t> (<t:{seconds}:R>)"


def sentence(refusal: Refusal) -> str:
    """The refusal's reason, its `{until}` (a pause's end, a quota's reset) shown as a
    Discord timestamp."""
    return refusal.reason if refusal.until is None else refusal.with_time(timestamp(refusal.until))
