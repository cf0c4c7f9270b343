"""People's passwords: Argon2id hashing, kept below the OAuth server so that the accounts
module (`vault.accounts`) sets a password the login form (`api.oauth`) checks, with one
hasher between them.

argon2-cffi's default (RFC 9106 low-memory) parameters take about 0.2 s on the machines
we run on. A password is never logged or stored: only its hash.
"""

from __future__ import annotations

from argon2 import PasswordHasher

PASSWORDS = PasswordHasher()


def hash_password(password: str) -> str:
    return PASSWORDS.hash(password)
