"""API keys: random, shown once, stored as SHA-256.

The keys are 256-bit random tokens, so a plain SHA-256 of the key is a safe verifier (no
password stretching is needed for high-entropy secrets) and allows a direct lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlmodel import Session, select

from server.db_models import ApiKey, utcnow

__all__ = [
    "API_KEY_PREFIX",
    "ROLES",
    "NewApiKey",
    "api_key_active",
    "create_api_key",
    "hash_key",
    "revoke_api_key",
    "verify_api_key",
]

ROLES = ("viewer", "admin")
#: Every API key starts with this, so that a key pasted where it does not belong can be recognised.
API_KEY_PREFIX = "lcds_"


@dataclass(frozen=True)
class NewApiKey:
    """A freshly created key: ``secret`` is shown once and never stored."""

    id: int
    role: str
    secret: str


def hash_key(secret: str) -> str:
    """The stored verifier of a key."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_api_key(session: Session, role: str, label: str | None = None) -> NewApiKey:
    """Create a key for ``role``; the caller prints ``secret`` once."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(key_prefix=secret[:12], key_hash=hash_key(secret), role=role, label=label, created_at=utcnow())
    session.add(row)
    session.flush()
    assert row.id is not None
    return NewApiKey(id=row.id, role=role, secret=secret)


def verify_api_key(session: Session, secret: str) -> ApiKey | None:
    """The active key matching ``secret``, or None."""
    digest = hash_key(secret)
    row = session.exec(select(ApiKey).where(ApiKey.key_hash == digest)).first()
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.key_hash, digest):
        return None
    return row


def api_key_active(session: Session, key_id: int) -> bool:
    """True while the key ``key_id`` exists and is not revoked: a console session opened with it ends with it."""
    row = session.get(ApiKey, key_id)
    return row is not None and row.revoked_at is None


def revoke_api_key(session: Session, key_id: int) -> bool:
    """Revoke a key by id; False when no such active key exists."""
    row = session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    session.add(row)
    return True
