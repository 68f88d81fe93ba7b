"""Vary (Region)'s browser editor: the short-lived signed links to it, and what its
submission queues.

A link reads `<job>.<image>.<member>.<expiry>.<nonce>.<signature>`: the signature is an
HMAC-SHA256, under a key only the bot holds, over everything before it, so changing
the job, the image, the member or the expiry breaks it. The nonce names the link's
row (bot.store.editor_links), which makes the link work once and holds who was given
it and where. A submission goes through the door like any request: rate, standing,
moderation, the spec, then the link is used (one compare-and-set), then admission
(quota, queue length); the job's answer goes to Discord as a reply to the result.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from ..config import HttpConfig
from ..moderation.rate import TokenBucket
from ..store.editor_links import IssuedLink, LinkStore
from ..store.jobs import Requester
from ..store.models import Job, utcnow
from .acting import Acting
from .actions import BY_NAME, ActionName, Source, Words
from .door import Accepted, Door, InputSource, Messages, Origin
from .refusals import Refusal, RefusalKind

log = logging.getLogger(__name__)

# The key signing the links when no environment variable holds one, kept in data_dir.
KEY_FILE = "editor-link.key"
# The path under [http] public_url that a link opens.
EDITOR_PATH = "/edit/"
# A submission's audit name (and its refusals': `editor.vary_region.refused`).
COMMAND = "editor.vary_region"
# The editor's routes take no key and have no rate limit, so a link whose signature does
# not verify (malformed, changed, another key's) names no one and costs nothing to send:
# its refusals are audited within this bound, all senders together, so a flood of them
# is not a flood of database writes (like unknown API keys, which are not audited). A
# refused link whose signature verifies names its member and is always audited.
UNSIGNED_AUDIT_BURST = 20
UNSIGNED_AUDITS_PER_MINUTE = 10.0


class LinkProblem(StrEnum):
    """Why a link does not open the editor; the value is its audit outcome."""

    MALFORMED = "malformed"  # not a link this bot makes
    TAMPERED = "tampered"  # its signature does not match what it says
    EXPIRED = "expired"
    USED = "used"
    UNKNOWN = "unknown"  # signed, but not given by this database (restored, reset)


# What the member reads for each problem: one sentence saying what to do instead.
_REASONS = {
    LinkProblem.MALFORMED: "This is not an editor link: use the Vary (Region) button under"
    " an image in Discord.",
    LinkProblem.TAMPERED: "This editor link has been changed and no longer works: click Vary"
    " (Region) under the image in Discord for a new one.",
    LinkProblem.EXPIRED: "This editor link has expired: click Vary (Region) under the image"
    " in Discord for a new one.",
    LinkProblem.USED: "This editor link was used already (each works once): click Vary"
    " (Region) under the image in Discord for a new one.",
    LinkProblem.UNKNOWN: "This editor link is not known here any more: click Vary (Region)"
    " under the image in Discord for a new one.",
}


@dataclass(frozen=True, kw_only=True)
class LinkClaim:
    """What a link says of itself: trusted only once its signature matched."""

    job_id: str
    image: int
    user_id: int
    expires_at: datetime
    nonce: str

    def payload(self) -> bytes:
        expiry = int(self.expires_at.timestamp())
        return f"{self.job_id}.{self.image}.{self.user_id}.{expiry}.{self.nonce}".encode()


def sign(key: bytes, claim: LinkClaim) -> str:
    """The link's token: the claim and its signature."""
    return f"{claim.payload().decode()}.{_b64(_mac(key, claim))}"


def read_token(key: bytes, token: str, now: datetime) -> LinkClaim | LinkProblem:
    """The claim a token makes, when it is this bot's, unchanged and not expired."""
    claim = _claim_of(token)
    if claim is None:
        return LinkProblem.MALFORMED
    if not hmac.compare_digest(_b64(_mac(key, claim)), token.rsplit(".", 1)[1]):
        return LinkProblem.TAMPERED
    if claim.expires_at <= now:
        return LinkProblem.EXPIRED
    return claim


def _claim_of(token: str) -> LinkClaim | None:
    """What a token says of itself, unchecked; None when it is not shaped as a link."""
    parts = token.split(".")
    if len(parts) != 6:
        return None
    job_id, image, user_id, expiry, nonce, _ = parts
    if not (image.isdigit() and user_id.isdigit() and expiry.isdigit()):
        return None
    return LinkClaim(
        job_id=job_id,
        image=int(image),
        user_id=int(user_id),
        expires_at=datetime.fromtimestamp(int(expiry), UTC),
        nonce=nonce,
    )


def _mac(key: bytes, claim: LinkClaim) -> bytes:
    return hmac.new(key, claim.payload(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def link_key(http: HttpConfig, data_dir: Path) -> bytes:
    """The key that signs links: the environment's, else one generated once and kept in
    data_dir (readable by the bot's user only), so every process on that folder and every
    restart reads the same. Blocking: call it in a thread."""
    if secret := os.environ.get(http.link_secret_env, "").strip():
        return hashlib.sha256(secret.encode()).digest()
    path = data_dir / KEY_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: of two processes starting at once, one writes the key and both read it.
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(handle, "w") as file:
        file.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


@dataclass(frozen=True, kw_only=True)
class Opened:
    """A link that opens the editor, with the job and image it edits."""

    token: str  # the link as its holder sent it
    link: IssuedLink
    job: Job
    source: Source


class ResultReplies(Protocol):
    """Where the answer of a region edit goes (the Discord door's): a reply to the result
    it was made from, shown by `member`'s placeholder until the job is delivered there."""

    def to(self, job: Job, member_id: int) -> Messages: ...


class RegionEditor:
    """The links to the editor, and the jobs its submissions queue."""

    def __init__(
        self,
        *,
        http: HttpConfig,
        data_dir: Path,
        links: LinkStore,
        door: Door,
        acting: Acting,
        replies: ResultReplies | None = None,
    ) -> None:
        self._http = http
        self._data_dir = data_dir
        self._links = links
        self._door = door
        self._acting = acting
        self._replies = replies
        self._key: bytes | None = None
        self._unsigned_audits = TokenBucket(UNSIGNED_AUDIT_BURST, UNSIGNED_AUDITS_PER_MINUTE)

    @property
    def served(self) -> bool:
        """Whether this process serves the editor: its HTTP server is on, its public
        address is configured, and Discord is here to answer (`atelier run`, not `atelier
        serve`). The HTTP server adds the editor's routes, and the button offers a link,
        only then: a link never leads to a page that is not there."""
        return (
            self._http.enabled and self._http.public_url is not None and self._replies is not None
        )

    async def issue(
        self, member: Requester, job_id: str, image: int, *, nsfw_channel: bool = False
    ) -> str:
        """A new link for `member` to edit image `image` of `job_id`, recorded and audited
        as the button's; its full address."""
        assert self._http.public_url is not None
        lifetime = timedelta(minutes=self._http.editor_link_minutes)
        # Whole seconds: the token carries the expiry as a Unix time.
        expires_at = (utcnow() + lifetime).replace(microsecond=0)
        claim = LinkClaim(
            job_id=job_id,
            image=image,
            user_id=member.user_id,
            expires_at=expires_at,
            nonce=secrets.token_hex(16),
        )
        await self._links.issue(
            IssuedLink(
                nonce=claim.nonce,
                job_id=job_id,
                image=image,
                user_id=member.user_id,
                user_name=member.user_name,
                guild_id=member.guild_id,
                channel_id=member.channel_id,
                role_ids=member.role_ids,
                nsfw_channel=nsfw_channel,
                expires_at=expires_at,
            ),
            BY_NAME[ActionName.VARY_REGION].command,
        )
        token = sign(await self._signing_key(), claim)
        return f"{self._http.public_url.rstrip('/')}{EDITOR_PATH}{token}"

    async def check(self, token: str) -> IssuedLink | Refusal:
        """The link a token names, when it opens the editor now; a refusal is audited."""
        claim = read_token(await self._signing_key(), token, utcnow())
        if isinstance(claim, LinkProblem):
            # An expired link is still this bot's: whom it was given to is known.
            signed = _claim_of(token) if claim is LinkProblem.EXPIRED else None
            return await self._refused(claim, token, signed)
        link = await self._links.get(claim.nonce)
        if link is None or (link.job_id, link.image, link.user_id) != (
            claim.job_id,
            claim.image,
            claim.user_id,
        ):
            return await self._refused(LinkProblem.UNKNOWN, token, claim)
        if link.used_at is not None:
            return await self._refused(LinkProblem.USED, token, claim)
        return link

    async def open(self, token: str) -> Opened | Refusal:
        """The link and the image it edits, when the editor opens on it now."""
        link = await self.check(token)
        if isinstance(link, Refusal):
            return link
        action = BY_NAME[ActionName.VARY_REGION]
        job = await self._acting.find(action, link.job_id)
        if isinstance(job, Refusal):
            return job
        source = await self._acting.source(action, job, link.image)
        return (
            source
            if isinstance(source, Refusal)
            else Opened(token=token, link=link, job=job, source=source)
        )

    async def submit(self, opened: Opened, words: Words, mask: InputSource) -> Accepted | Refusal:
        """The editor's submission on a link `open` opened: a Vary (Region) of its image
        with `words` and the painted `mask`, through the door like any request. The link
        is used only once the request passed the door's checks, and before it is queued:
        that compare-and-set, not a second look, settles a link used since it opened."""
        link = opened.link
        member = _member_of(link)
        action = BY_NAME[ActionName.VARY_REGION]
        draft = self._acting.draft(action, opened.source, words, command=COMMAND)
        checked = await self._door.check(member, draft, mask, Origin.HTTP)
        if isinstance(checked, Refusal):
            await mask.discard()
            await self._door.refused(member, COMMAND, Origin.HTTP, checked)
            return checked
        if not await self._links.use(link):
            await mask.discard()
            # Its signature verified when it was opened: the entry names its member.
            return await self._refused(LinkProblem.USED, opened.token, _claim_of(opened.token))
        assert self._replies is not None  # submissions come only where the editor is served
        messages = self._replies.to(opened.job, member.user_id)
        return await self._door.admit(member, draft, mask, Origin.HTTP, checked, messages=messages)

    async def unreadable(self, link: IssuedLink, reason: str) -> Refusal:
        """A submission on a good link whose body or mask cannot be used: refused and
        audited as its member's, like the door's refusals of it; the link stays unused."""
        refusal = Refusal(kind=RefusalKind.BAD_INPUT, reason=reason)
        await self._door.refused(_member_of(link), COMMAND, Origin.HTTP, refusal)
        return refusal

    async def _refused(
        self, problem: LinkProblem, token: str, signed: LinkClaim | None = None
    ) -> Refusal:
        """Audit and answer a refused link; `signed`: its claim, where its signature
        matched, so its member is the entry's actor (forget-me finds them there)."""
        log.info("editor link refused: %s", problem.value)
        if signed is not None or self._unsigned_audit_allowed():
            # What the link claims, cut short (a tampered one may say anything).
            claimed: dict[str, object] = {"link": _claimed(token)}
            await self._links.refused(problem.value, claimed, signed.user_id if signed else None)
        kind = RefusalKind.GONE if problem in _GONE else RefusalKind.NOT_ALLOWED
        return Refusal(kind=kind, reason=_REASONS[problem])

    def _unsigned_audit_allowed(self) -> bool:
        """Whether a refusal of a link no one signed is audited: within the bound."""
        now = time.monotonic()
        if self._unsigned_audits.wait(now) > 0:
            return False
        self._unsigned_audits.take(now)
        return True

    async def _signing_key(self) -> bytes:
        if self._key is None:
            self._key = await asyncio.to_thread(link_key, self._http, self._data_dir)
        return self._key


def _member_of(link: IssuedLink) -> Requester:
    """The member a link was given to, where they clicked for it."""
    return Requester.on_discord(
        user_id=link.user_id,
        user_name=link.user_name,
        guild_id=link.guild_id,
        channel_id=link.channel_id,
        role_ids=link.role_ids,
        nsfw_channel=link.nsfw_channel,
    )


_GONE = frozenset({LinkProblem.EXPIRED, LinkProblem.USED, LinkProblem.UNKNOWN})


def _claimed(token: str) -> Sequence[str]:
    """The job, image and expiry a token names, each cut short: never the signature or
    the nonce, which would let a reader of the audit log rebuild a live link, nor the
    member, who is the entry's actor where the link is this bot's (a changed link's
    member id is no one's to keep)."""
    parts = token.split(".")
    return [part[:24] for part in (*parts[:2], *parts[3:4])]
