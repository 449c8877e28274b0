"""API keys and ephemeral keys: mint a secret, keep only its SHA-256, check it on every request.

API keys (``vg_...``) are for servers and live until revoked. Ephemeral keys (``ek_...``) are what a
browser holds: short-lived and bound to the session config they were issued for.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa

from voxgate.roles import DEFAULT_KEY_ROLES, parse_roles
from voxgate.store.database import Database
from voxgate.store.models import ApiKey, utc_now

KeyKind = Literal["api", "ephemeral"]

SECRET_PREFIXES: dict[str, str] = {"api": "vg_", "ephemeral": "ek_"}
EPHEMERAL_DEFAULT_TTL_S = 600  # what OpenAI's client secrets default to
PREFIX_SHOWN = 10  # "vg_" plus a few characters: enough to tell keys apart in a list, useless to guess

KeyRows = list[dict[str, Any]]  # here because the method named ``list`` shadows the builtin in the class


@dataclass(frozen=True)
class KeyRecord:
    """What a verified key grants."""

    id: str
    name: str
    kind: str
    scopes: tuple[str, ...]
    session_config: dict[str, Any] | None
    expires_at: datetime | None
    owner: str | None = None  # who minted an ephemeral key
    agent: str | None = None  # the agent an ephemeral key is bound to
    roles: frozenset[str] = frozenset(DEFAULT_KEY_ROLES)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    """Create, verify, revoke and list keys. ``now`` is the clock for expiry (tests pass their own)."""

    def __init__(self, db: Database, *, now: Callable[[], datetime] = utc_now) -> None:
        self._db = db
        self._now = now

    async def create(
        self,
        name: str,
        kind: KeyKind = "api",
        scopes: Iterable[str] = (),
        ttl_s: float | None = None,
        session_config: Mapping[str, Any] | None = None,
        owner: str | None = None,
        agent: str | None = None,
        roles: Iterable[str] | None = None,
    ) -> tuple[str, str]:
        """Mint a key; returns ``(key_id, secret)``. The secret is shown once and never stored.

        Ephemeral keys expire after ``ttl_s`` (default 600 s); API keys only when ``ttl_s`` is given.
        ``owner`` (the minting key) and ``agent`` bind an ephemeral key's session. ``roles`` (voxgate/roles.py)
        default to ``DEFAULT_KEY_ROLES``; an unknown role is a ValueError.
        """
        if kind not in SECRET_PREFIXES:
            raise ValueError(f"key kind must be 'api' or 'ephemeral', got {kind!r}")
        if ttl_s is None and kind == "ephemeral":
            ttl_s = EPHEMERAL_DEFAULT_TTL_S
        if ttl_s is not None and not ttl_s > 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        scope_list = [scopes] if isinstance(scopes, str) else list(scopes)
        role_list = list(parse_roles(DEFAULT_KEY_ROLES if roles is None else roles))
        secret = SECRET_PREFIXES[kind] + secrets.token_urlsafe(32)
        key_id = "key_" + secrets.token_hex(12)
        now = self._now()
        async with self._db.session() as session, session.begin():
            session.add(
                ApiKey(
                    id=key_id,
                    name=name,
                    prefix=secret[:PREFIX_SHOWN],
                    hash=hash_secret(secret),
                    kind=kind,
                    scopes=scope_list,
                    session_config=dict(session_config) if session_config is not None else None,
                    created_at=now,
                    expires_at=now + timedelta(seconds=ttl_s) if ttl_s is not None else None,
                    owner=owner,
                    agent=agent,
                    roles=role_list,
                )
            )
        return key_id, secret

    async def verify(self, secret: str) -> KeyRecord | None:
        """The key's grant if the secret is known, not revoked and not expired; marks it used.

        An expired key met here is deleted: whoever holds it gets nothing from it again.
        """
        if not secret.startswith(tuple(SECRET_PREFIXES.values())):
            return None
        digest = hash_secret(secret)
        now = self._now()
        async with self._db.session() as session, session.begin():
            key = await session.scalar(sa.select(ApiKey).where(ApiKey.hash == digest))
            # The lookup found a row by its hash; compare again in constant time so a match is only
            # ever decided by compare_digest, whatever the database's string comparison does.
            if key is None or not hmac.compare_digest(key.hash, digest):
                return None
            if key.expires_at is not None and key.expires_at <= now:
                await session.delete(key)
                return None
            if key.revoked_at is not None:
                return None
            key.used_at = now
            return KeyRecord(
                id=key.id,
                name=key.name,
                kind=key.kind,
                scopes=tuple(key.scopes or ()),
                session_config=key.session_config,
                expires_at=key.expires_at,
                owner=key.owner,
                agent=key.agent,
                roles=frozenset(key.roles or ()),
            )

    async def revoke(self, key_id: str) -> bool:
        """Revoke a key; False if there is no such key or it was already revoked."""
        async with self._db.session() as session, session.begin():
            result = await session.execute(
                sa.update(ApiKey)
                .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=self._now())
            )
            return bool(getattr(result, "rowcount", 0))

    async def purge_expired(self) -> int:
        """Delete keys whose expiry has passed (mostly spent ephemeral keys); returns how many."""
        async with self._db.session() as session, session.begin():
            result = await session.execute(
                sa.delete(ApiKey).where(ApiKey.expires_at.is_not(None), ApiKey.expires_at <= self._now())
            )
            return int(getattr(result, "rowcount", 0))

    async def list(self, *, kind: KeyKind | None = None) -> KeyRows:
        """Every key, newest first, JSON-ready and without hashes."""
        query = sa.select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id)
        if kind is not None:
            query = query.where(ApiKey.kind == kind)
        async with self._db.session() as session:
            keys = await session.scalars(query)
            return [
                {
                    "id": key.id,
                    "name": key.name,
                    "prefix": key.prefix,
                    "kind": key.kind,
                    "scopes": list(key.scopes or ()),
                    "roles": list(key.roles or ()),
                    "created_at": key.created_at.isoformat(),
                    "expires_at": key.expires_at.isoformat() if key.expires_at else None,
                    "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
                    "used_at": key.used_at.isoformat() if key.used_at else None,
                }
                for key in keys
            ]
