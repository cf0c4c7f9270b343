"""Per-recipient pseudonyms: each organisation sees residents under ids of its own.

A pseudonym is the resident's vault id sealed with AES-SIV (RFC 5297, deterministic
authenticated encryption) under a key derived for that recipient alone, with the
recipient's name as associated data. So it is

* stable: the same recipient always gets the same pseudonym for the same resident, and
  can keep it as its own key;
* unlinkable: two recipients' pseudonyms for one resident are unrelated strings, so a
  department and a property company cannot join their copies on it;
* not reversible without the vault: only the keyring's master key opens it, and one
  recipient's pseudonym does not open under another's key (a forgery or another
  organisation's pseudonym is simply not found).

No table is needed to resolve a pseudonym, so issuing one costs nothing per resident.
The master key is never rotated: rotating it would change every recipient's keys. The
`ps_` prefix (API.md) keeps pseudonyms from being mistaken for vault ids.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from vault.interfaces import Keyring

__all__ = ["PSEUDONYM_PREFIX", "Pseudonyms", "is_pseudonym"]

PSEUDONYM_PREFIX = "ps_"
_MAX_LENGTH = 200  # far above any real pseudonym; refuses to decode arbitrary input
_VAULT_ID = re.compile(r"r_([0-9a-f]{16})")  # vault.models.new_id("r"): packed into 8 bytes
_PACKED, _TEXT = b"\x01", b"\x00"


def _pack(resident_id: str) -> bytes:
    match = _VAULT_ID.fullmatch(resident_id)
    if match:
        return _PACKED + bytes.fromhex(match.group(1))
    return _TEXT + resident_id.encode()


def _unpack(data: bytes) -> str:
    if data[:1] == _PACKED and len(data) == 9:
        return "r_" + data[1:].hex()
    if data[:1] == _TEXT:
        return data[1:].decode()
    raise ValueError("not a packed resident id")


def is_pseudonym(value: str) -> bool:
    return value.startswith(PSEUDONYM_PREFIX)


class Pseudonyms:
    """Issues and resolves recipients' pseudonyms; thread-safe, keys cached per recipient."""

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring
        self._ciphers: dict[str, AESSIV] = {}
        self._lock = threading.Lock()

    def _cipher(self, recipient: str) -> AESSIV:
        with self._lock:
            cipher = self._ciphers.get(recipient)
            if cipher is None:
                cipher = AESSIV(self._keyring.pseudonym_key(recipient))
                self._ciphers[recipient] = cipher
            return cipher

    def of(self, recipient: str, resident_id: str) -> str:
        """The recipient's pseudonym for a resident."""
        sealed = self._cipher(recipient).encrypt(_pack(resident_id), [recipient.encode()])
        text = base64.b32encode(sealed).decode().rstrip("=").lower()
        return PSEUDONYM_PREFIX + text

    def resolve(self, recipient: str, pseudonym: str) -> str | None:
        """The vault id behind the recipient's pseudonym; None for anything else."""
        if not is_pseudonym(pseudonym) or len(pseudonym) > _MAX_LENGTH:
            return None
        body = pseudonym[len(PSEUDONYM_PREFIX) :].upper()
        try:
            sealed = base64.b32decode(body + "=" * (-len(body) % 8))
            return _unpack(self._cipher(recipient).decrypt(sealed, [recipient.encode()]))
        except (binascii.Error, ValueError, InvalidTag, UnicodeDecodeError):
            return None
