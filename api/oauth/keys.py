"""Access-token signing keys: Ed25519 keys held by the keyring, published as a JWKS.

The private key never leaves the keyring (`Keyring.sign`); the database keeps each key's
public half, so any node can serve the JWKS and check tokens without asking the keyring.

Rotation (`rotate_signing_key`) makes a new key active at once and retires the old one.
A retired key stays in the JWKS until every token it signed has expired: `expires_after`
is the retirement time plus the longest token lifetime.

With the local keyring (a file each process loads once), rotate while the service is
stopped, or restart it afterwards: a running process does not see keys another process
added to the file. `sign_token` refuses to sign with a key whose public half differs from
the database's, so this fails closed instead of issuing tokens no one can verify.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from access.runtime import Runtime
from api.oauth.models import TokenSigningKey
from vault.interfaces import JWS_ALGORITHM, JWS_ALGORITHMS_ACCEPTED, Keyring
from vault.models import utcnow

log = structlog.get_logger(__name__)

ALGORITHM = JWS_ALGORITHM  # RFC 9864; a key row may still say "EdDSA": the same key
ACCEPTED_ALGORITHMS = JWS_ALGORITHMS_ACCEPTED  # tokens signed before the rename verify
KEY_NAME_PREFIX = "oauth-token-"
CSRF_KEY_NAME = "oauth-csrf"  # signs the login form's anti-CSRF tokens
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - a media type, not a secret


class SigningKeyMismatch(RuntimeError):
    """The keyring's key for a kid is not the one the database publishes."""


def keyring_name(kid: str) -> str:
    return f"{KEY_NAME_PREFIX}{kid}"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _new_kid(now: datetime) -> str:
    return f"{now:%Y%m%d}-{secrets.token_hex(4)}"


def active_signing_key(session: Session) -> TokenSigningKey | None:
    """The newest key that is not retired."""
    return session.scalars(
        select(TokenSigningKey)
        .where(TokenSigningKey.retired_at.is_(None))
        .order_by(TokenSigningKey.created_at.desc(), TokenSigningKey.kid.desc())
        .limit(1)
    ).first()


def _create(session: Session, keyring: Keyring, now: datetime) -> TokenSigningKey:
    kid = _new_kid(now)
    public = keyring.signing_public_key(keyring_name(kid))  # made in the keyring if absent
    row = TokenSigningKey(kid=kid, algorithm=ALGORITHM, public_key=public, created_at=now)
    session.add(row)
    session.flush()
    log.info("oauth.signing_key_created", kid=kid)
    return row


def ensure_signing_key(
    session: Session, keyring: Keyring, *, now: datetime | None = None
) -> TokenSigningKey:
    """The active key, made on first use."""
    return active_signing_key(session) or _create(session, keyring, now or utcnow())


def ensure_oauth_keys(runtime: Runtime) -> str:
    """Make the token key and the login form's key if absent; returns the active kid.

    Call it from `init` (and it runs at start-up): with the local keyring, keys made
    before the service starts are in the file every process loads.
    """
    keyring = runtime.vault.keyring
    keyring.signing_public_key(CSRF_KEY_NAME)
    with runtime.transaction() as session:
        return ensure_signing_key(session, keyring).kid


def rotate_signing_key(
    session: Session,
    keyring: Keyring,
    *,
    max_token_lifetime: timedelta,
    now: datetime | None = None,
) -> TokenSigningKey:
    """Make a new key active; the old ones stay published until their tokens have expired."""
    now = now or utcnow()
    retiring = list(
        session.scalars(select(TokenSigningKey).where(TokenSigningKey.retired_at.is_(None)))
    )
    for old in retiring:
        old.retired_at = now
        old.expires_after = now + max_token_lifetime
    session.flush()
    row = _create(session, keyring, now)
    log.info("oauth.signing_key_rotated", kid=row.kid, retired=[k.kid for k in retiring])
    return row


def published_keys(session: Session, *, now: datetime | None = None) -> list[TokenSigningKey]:
    """Keys that may have signed a token that has not yet expired, newest first."""
    now = now or utcnow()
    return list(
        session.scalars(
            select(TokenSigningKey)
            .where(
                or_(TokenSigningKey.expires_after.is_(None), TokenSigningKey.expires_after > now)
            )
            .order_by(TokenSigningKey.created_at.desc(), TokenSigningKey.kid.desc())
        )
    )


def jwk(row: TokenSigningKey) -> dict[str, str]:
    """RFC 8037 public JWK of an Ed25519 key, named by its fully-specified algorithm
    (RFC 9864) whatever name its row was made under: it signs tokens as `Ed25519` now."""
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url(row.public_key),
        "kid": row.kid,
        "alg": ALGORITHM,
        "use": "sig",
    }


def jwks(rows: list[TokenSigningKey]) -> dict[str, list[dict[str, str]]]:
    return {"keys": [jwk(r) for r in rows]}


def _json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class TokenSigner:
    """Compact JWS (RFC 7515) signed by the keyring with the active key."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self._checked: set[str] = set()

    def sign(
        self, session: Session, claims: Mapping[str, Any], *, typ: str = ACCESS_TOKEN_TYPE
    ) -> str:
        key = ensure_signing_key(session, self.keyring)
        name = keyring_name(key.kid)
        if key.kid not in self._checked:
            if self.keyring.signing_public_key(name) != key.public_key:
                log.error("oauth.signing_key_mismatch", kid=key.kid)
                raise SigningKeyMismatch(key.kid)
            self._checked.add(key.kid)
        header = {"alg": ALGORITHM, "typ": typ, "kid": key.kid}
        signing_input = f"{b64url(_json(header))}.{b64url(_json(claims))}"
        signature = self.keyring.sign(name, signing_input.encode("ascii"))
        return f"{signing_input}.{b64url(signature)}"
