"""Interfaces the vault depends on, so a local file and an HSM are interchangeable."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol, runtime_checkable

from vault.crypto import Suite

# What `Keyring.sign` makes, as a JWS names it (access tokens, consent receipts): RFC 9864's
# fully-specified `Ed25519`. The polymorphic `EdDSA` it deprecates names the very same
# signature; verifiers accept both, for what was issued under the old name.
JWS_ALGORITHM: Final = "Ed25519"
JWS_ALGORITHMS_ACCEPTED: Final = frozenset({JWS_ALGORITHM, "EdDSA"})


@dataclass(frozen=True)
class KekInfo:
    kek_id: str
    suite: Suite
    created_at: datetime
    active: bool


@runtime_checkable
class Keyring(Protocol):
    """Holds key-encryption keys and the blind-index key; key material need never leave it.

    Data keys are wrapped here, so an HSM-backed keyring never exposes its KEKs.
    """

    @property
    def suite(self) -> Suite:
        """The suite new data keys use."""
        ...

    @property
    def blind_index_scheme(self) -> str:
        """Names the MAC and key, e.g. 'hmac-sha256:bik-1'; stored with every index entry."""
        ...

    def active_kek_id(self) -> str: ...

    def keks(self) -> list[KekInfo]: ...

    def wrap(self, data_key: bytes, context: bytes) -> tuple[str, bytes]:
        """Wrap under the active KEK; returns (kek id, wrapped bytes)."""
        ...

    def unwrap(self, kek_id: str, wrapped: bytes, context: bytes) -> bytes: ...

    def rotate_kek(self) -> str:
        """Create a new active KEK; old ones stay usable for unwrapping until destroyed."""
        ...

    def destroy_kek(self, kek_id: str) -> None: ...

    def blind_index(self, message: bytes) -> bytes: ...

    def pseudonym_key(self, recipient: str) -> bytes:
        """A 64-byte AES-SIV key for one recipient's pseudonyms, derived from a master key
        that never leaves the keyring; the same recipient always gets the same key."""
        ...

    def signing_public_key(self, name: str) -> bytes:
        """Raw Ed25519 public key of the named signing key (e.g. 'audit-log'), made if absent."""
        ...

    def sign(self, name: str, message: bytes) -> bytes:
        """Ed25519 signature by the named signing key; the private key never leaves."""
        ...
