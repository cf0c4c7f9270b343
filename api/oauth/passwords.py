"""Hashing of what people and clients prove themselves with.

* Passwords: Argon2id (`vault.passwords`, where accounts set them). An unknown username
  is checked against a dummy hash made with the same parameters, so the time taken does
  not tell who exists.
* Client secrets: Argon2id too, with lighter parameters. A secret is 256 random bits, not
  a word a person chose, so stretching adds nothing against guessing; the hash only has
  to keep a stolen database from yielding secrets. An unknown or revoked client, or one
  with no secret, is checked against a dummy hash too: the time does not tell them apart.
* Authorization codes and refresh tokens: SHA-256. They are random and short-lived, and
  are looked up by their digest.
"""

from __future__ import annotations

import hashlib
import secrets
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from vault.passwords import PASSWORDS

CLIENT_SECRETS = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


@lru_cache(maxsize=1)
def _dummy_password_hash() -> str:
    return PASSWORDS.hash(secrets.token_urlsafe(16))


@lru_cache(maxsize=1)
def _dummy_client_secret_hash() -> str:
    return CLIENT_SECRETS.hash(secrets.token_urlsafe(32))


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True if the password matches; with no stored hash, spends the same time and fails."""
    if stored_hash is None:
        _verify(PASSWORDS, _dummy_password_hash(), password)
        return False
    return _verify(PASSWORDS, stored_hash, password)


def password_needs_rehash(stored_hash: str) -> bool:
    return PASSWORDS.check_needs_rehash(stored_hash)


def new_client_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_client_secret(secret: str) -> str:
    return CLIENT_SECRETS.hash(secret)


def verify_client_secret(stored_hash: str | None, secret: str) -> bool:
    """True if the secret matches; with no stored hash (no such client, a public or a
    certificate client), spends the same time and fails."""
    if stored_hash is None:
        _verify(CLIENT_SECRETS, _dummy_client_secret_hash(), secret)
        return False
    return _verify(CLIENT_SECRETS, stored_hash, secret)


def _verify(hasher: PasswordHasher, stored_hash: str, given: str) -> bool:
    try:
        return hasher.verify(stored_hash, given)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def digest(value: str) -> str:
    """Lookup digest of a high-entropy token (authorization code, refresh token)."""
    return hashlib.sha256(value.encode()).hexdigest()
