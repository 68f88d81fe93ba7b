"""HTTP API keys: made by a member in Discord, stored as scrypt hashes, each acting as
its member.

A key reads `atl_<lookup>_<secret>`. The lookup part finds the row, so a wrong key
costs one indexed read, not a hash per stored key; the secret is checked against
its scrypt hash (a per-key random salt, hashlib's memory-hard KDF). Only the hash
is stored, and the key is shown once, when it is made.

Checking the hash takes about a tenth of a second of CPU by design, so a key that
passed once is remembered in memory by its SHA-256 digest. The row is still read
on every request: a revoked key is refused at once.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from . import audit
from .audit import Actor, user_target
from .jobs import upsert_user
from .models import ApiKey, User, utcnow

KEY_PREFIX = "atl"
# Keys a member may hold at once (revoked ones do not count).
MAX_ACTIVE_KEYS = 10
MAX_NAME_CHARS = 100
# scrypt cost: 16 MiB and ~0.1 s a check; within OpenSSL's default memory limit.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
# Keys remembered as checked (by digest), least recently used dropped first.
VERIFIED_CACHE = 1024
# `last_used_at` is refreshed at most this often, so requests are not all writes.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class TooManyKeys(Exception):
    def __init__(self) -> None:
        super().__init__(
            f"You already have {MAX_ACTIVE_KEYS} API keys; revoke one (/apikey revoke) first."
        )


@dataclass(frozen=True)
class NewKey:
    """A key just made: `secret` is the whole key, shown to its member once and never again."""

    key_id: int
    name: str
    secret: str


@dataclass(frozen=True)
class KeyHolder:
    """Who a presented key acts as: its member, with the roles and server kept at creation."""

    key_id: int
    user_id: int
    user_name: str
    guild_id: int | None
    role_ids: tuple[int, ...]
    ban_reason: str | None  # None unless the member is banned


def hash_secret(secret: str, salt: bytes | None = None) -> str:
    """`scrypt$N$r$p$salt$hash` (base64 parts): self-describing, so the cost can change."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(
        secret.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    parts = ("scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest))
    return "$".join(parts)


def secret_matches(secret: str, stored: str) -> bool:
    """Whether `secret` hashes to `stored` (compared in constant time)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        found = hashlib.scrypt(
            secret.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except ValueError:
        return False
    return hmac.compare_digest(found, expected)


def split_key(presented: str) -> tuple[str, str] | None:
    """(lookup, secret) of a key as presented; None when it cannot be one of ours."""
    if not presented.isascii():  # ours are; other text (undecodable bytes) cannot be bound
        return None
    prefix, _, rest = presented.strip().partition("_")
    lookup, _, secret = rest.partition("_")
    if prefix != KEY_PREFIX or not lookup or not secret or len(lookup) > 16:
        return None
    return lookup, secret


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class ApiKeyStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._verified: OrderedDict[bytes, int] = OrderedDict()

    async def create(
        self,
        user_id: int,
        user_name: str,
        name: str,
        guild_id: int | None,
        role_ids: Sequence[int],
        actor: Actor,
    ) -> NewKey:
        """A new key for the member; raises TooManyKeys (audited) at the limit."""
        lookup, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        key_hash = await asyncio.to_thread(hash_secret, secret)
        name = " ".join(name.split())[:MAX_NAME_CHARS] or "key"
        async with self._sessions.begin() as session:
            await upsert_user(session, user_id, user_name)  # the write lock first
            active = await session.scalar(
                select(func.count())
                .select_from(ApiKey)
                .where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
            )
            row: ApiKey | None = None
            if (active or 0) < MAX_ACTIVE_KEYS:
                row = ApiKey(
                    user_id=user_id,
                    name=name,
                    lookup=lookup,
                    key_hash=key_hash,
                    guild_id=guild_id,
                    role_ids=list(role_ids),
                )
                session.add(row)
                await session.flush()
            audit.record_by(
                session,
                actor,
                "apikey.create",
                "ok" if row else "refused",
                target=user_target(user_id),
                params={"key_id": row.id, "name": name} if row else {"active": active},
            )
        if row is None:
            raise TooManyKeys()
        return NewKey(row.id, name, f"{KEY_PREFIX}_{lookup}_{secret}")

    async def keys_of(self, user_id: int) -> Sequence[ApiKey]:
        """The member's keys, active first, newest first."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(ApiKey)
                .where(ApiKey.user_id == user_id)
                .order_by(ApiKey.revoked_at.is_not(None), ApiKey.created_at.desc())
            )
            return rows.all()

    async def revoke(self, key_id: int, user_id: int, actor: Actor) -> bool:
        """Revoke one of the member's own keys; False (audited) when it is not theirs or
        already revoked. Requests with it are refused from now on."""
        async with self._sessions.begin() as session:
            revoked = await session.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id, ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            done = bool(revoked.rowcount)  # type: ignore[attr-defined]
            audit.record_by(
                session,
                actor,
                "apikey.revoke",
                "ok" if done else "no-op",
                target=user_target(user_id),
                params={"key_id": key_id},
            )
        return done

    async def authenticate(self, presented: str) -> KeyHolder | None:
        """Who the key acts as; None for a key that is unknown, wrong or revoked."""
        parts = split_key(presented)
        if parts is None:
            return None
        lookup, secret = parts
        async with self._sessions() as session:
            found = (
                await session.execute(
                    select(ApiKey, User.name, User.banned, User.ban_reason)
                    .join(User, User.id == ApiKey.user_id)
                    .where(ApiKey.lookup == lookup)
                )
            ).one_or_none()
        if found is None:
            return None
        key, user_name, banned, ban_reason = found
        if key.revoked_at is not None or not await self._verify(presented, secret, key):
            return None
        now = utcnow()
        if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
            async with self._sessions.begin() as session:
                await session.execute(
                    update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now)
                )
        return KeyHolder(
            key_id=key.id,
            user_id=key.user_id,
            user_name=user_name,
            guild_id=key.guild_id,
            role_ids=tuple(key.role_ids or ()),
            ban_reason=(ban_reason or "banned") if banned else None,
        )

    async def _verify(self, presented: str, secret: str, key: ApiKey) -> bool:
        digest = hashlib.sha256(presented.encode()).digest()
        if self._verified.get(digest) == key.id:
            self._verified.move_to_end(digest)
            return True
        if not await asyncio.to_thread(secret_matches, secret, key.key_hash):
            return False
        self._verified[digest] = key.id
        if len(self._verified) > VERIFIED_CACHE:
            self._verified.popitem(last=False)
        return True
