"""Moderation at the door: blocked terms in every text a job uses, rate limits, timed pauses.

One service for every front end (Discord commands and buttons, the HTTP API):
it reads the blocklist (config terms plus the ones admins add), screens the
texts of a job, counts a member's blocked prompts and pauses one who keeps
trying, and takes rate-limit tokens. Decisions are audited; admins hear about
pauses through `notify` (bot.discord posts them in `[moderation] log_channel_id`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from ..config import ModerationConfig
from ..jobs.spec import blocked_term
from ..store.audit import Actor, AuditLog
from ..store.guilds import GuildStore
from ..store.models import utcnow
from ..store.users import UserStore
from .rate import Limited, RateLimits

log = logging.getLogger(__name__)

# Audited for each blocked prompt; counting them makes a member's strikes.
BLOCKED_ACTION = "moderation.blocked"


class TextKind(StrEnum):
    """Where a text comes from, as the member is told about a blocked term in it; the
    value is what the audit entry's `where` holds."""

    PROMPT = "prompt"
    NEGATIVE = "negative"
    DEFAULTS = "defaults"
    STYLE = "style"
    SOURCE = "source"


@dataclass(frozen=True)
class ScreenedText:
    """One text of a job to screen, with where it comes from; None or "" is not screened
    (an option the member left out)."""

    kind: TextKind
    text: str | None


_WHERE = {
    TextKind.PROMPT: "Your prompt contains `{term}`, which this server does not allow.",
    TextKind.NEGATIVE: "Your negative prompt contains `{term}`, which this server does not allow.",
    TextKind.DEFAULTS: (
        "Your own default negative prompt contains `{term}`, which this server does not"
        " allow; change it with /settings."
    ),
    TextKind.STYLE: "The style you chose adds `{term}`, which this server does not allow.",
    TextKind.SOURCE: (
        "The prompt of that image contains `{term}`, which this server no longer allows."
    ),
}

Notify = Callable[[str], None]


@dataclass(frozen=True)
class Blocked:
    term: str
    where: TextKind
    # For the member only: it names the term. When this strike paused the member it says
    # so with `{until}`, which each door fills with `until` in its own format.
    message: str
    until: datetime | None = None


class Moderation:
    def __init__(
        self,
        config: ModerationConfig,
        guilds: GuildStore,
        users: UserStore,
        audit: AuditLog,
        notify: Notify | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._guilds = guilds
        self._users = users
        self._audit = audit
        self._notify = notify
        self._clock = clock
        self._rates = RateLimits(
            config.member_burst,
            config.member_per_minute,
            config.guild_burst,
            config.guild_per_minute,
        )

    async def terms(self, guild_id: int | None) -> list[str]:
        """Today's blocked terms in `guild_id`: the config's, then the admins' own."""
        stored = await self._guilds.blocked_terms(guild_id)
        return list(dict.fromkeys([*self.config.blocklist, *stored]))

    def rate(self, user_id: int, guild_id: int | None) -> Limited | None:
        """Take a token for one job asked for, or the limit that refuses it (no I/O)."""
        return self._rates.acquire(user_id, guild_id, self._clock())

    async def screen(
        self,
        who: Actor,
        texts: Sequence[ScreenedText],
        command: str,
        terms: list[str] | None = None,
    ) -> Blocked | None:
        """The first blocked term in `texts` (in order), audited as a
        strike; a member at `[moderation] strikes` within the window is paused and the
        admins told. None when every text is clean. `terms`: those `terms()` gave for
        this request already (a request screened in steps reads them once)."""
        if terms is None:
            terms = await self.terms(who.guild_id)
        if not terms:
            return None
        for screened in texts:
            if not screened.text:
                continue
            term = blocked_term(screened.text, terms)
            if term is not None:
                return await self._strike(who, term, screened.kind, command)
        return None

    async def _strike(self, who: Actor, term: str, where: TextKind, command: str) -> Blocked:
        message = _WHERE[where].format(term=term)
        await self._audit.record_command(
            who,
            BLOCKED_ACTION,
            "refused",
            params={"term": term, "where": where.value, "command": command},
        )
        strikes, config = self.config.strikes, self.config
        if not strikes or who.user_id is None:
            return Blocked(term, where, message)
        window = timedelta(minutes=config.strike_window_minutes)
        count = await self._audit.count(who.user_id, BLOCKED_ACTION, utcnow() - window)
        if count < strikes:
            return Blocked(term, where, message)
        until = utcnow() + timedelta(minutes=config.strike_cooldown_minutes)
        reason = f"{count} blocked prompts in {config.strike_window_minutes:g} minutes"
        await self._users.pause(who.user_id, until, reason, Actor(None, who.guild_id))
        log.info("user %d paused until %s: %s", who.user_id, until.isoformat(), reason)
        where_said = f" in <#{who.channel_id}>" if who.channel_id else ""
        self._tell_admins(
            f"🛡️ <@{who.user_id}> is paused for {config.strike_cooldown_minutes:g} minutes"
            f" after {reason} (the last one{where_said} asked for `{term}`)."
        )
        return Blocked(
            term, where, f"{message} After {reason}, you are paused until {{until}}.", until
        )

    def _tell_admins(self, text: str) -> None:
        if self._notify is None:
            return
        try:
            self._notify(text)
        except Exception:  # telling admins must never fail the member's command
            log.exception("could not tell the admins: %s", text)
