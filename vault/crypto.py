"""Envelope encryption of field values: AEAD suites and the versioned ciphertext format.

A resident's fields are sealed with that resident's data key. The associated data binds
the resident id, the field name and the data-key version, so a ciphertext copied to
another resident or field, or presented with another key version, fails to open.

Ciphertext layout (format 1: one field; format 2: a document of one sensitivity class)::

    0      1        2..5              6..17   18..
    fmt    suite    key version (BE)  nonce   ciphertext || 16-byte tag

A document (format 2, `seal_document`) holds several fields of one resident as one AEAD
message: its associated data binds the resident id, the class and the key version, and the
field names travel inside the authenticated plaintext, so a document moved to another
resident or class, or presented under another key version, fails to open.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from enum import StrEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault.errors import DecryptionFailed

FORMAT_VERSION = 1
DOCUMENT_FORMAT = 2
NONCE_SIZE = 12
TAG_SIZE = 16
_HEADER = struct.Struct(">BBI")
HEADER_SIZE = _HEADER.size + NONCE_SIZE


class Suite(StrEnum):
    """The cipher suites: the international default and China's national (GM/T) suite."""

    AES_256_GCM = "aes-256-gcm"
    SM4_GCM = "sm4-gcm"

    @property
    def suite_id(self) -> int:
        return _SUITE_IDS[self]

    @property
    def key_size(self) -> int:
        return 32 if self is Suite.AES_256_GCM else 16

    @property
    def hmac_algorithm(self) -> str:
        """The blind-index MAC that goes with the suite (HMAC-SHA256 or HMAC-SM3)."""
        return "hmac-sha256" if self is Suite.AES_256_GCM else "hmac-sm3"

    @classmethod
    def from_id(cls, suite_id: int) -> Suite:
        for suite, known in _SUITE_IDS.items():
            if known == suite_id:
                return suite
        raise DecryptionFailed("unknown cipher suite")


_SUITE_IDS: dict[Suite, int] = {Suite.AES_256_GCM: 1, Suite.SM4_GCM: 2}


def new_key(suite: Suite) -> bytes:
    return os.urandom(suite.key_size)


def aead_encrypt(suite: Suite, key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt and authenticate; returns ciphertext || tag."""
    if suite is Suite.AES_256_GCM:
        return AESGCM(key).encrypt(nonce, plaintext, aad)
    encryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor()
    encryptor.authenticate_additional_data(aad)
    body = encryptor.update(plaintext) + encryptor.finalize()
    return body + encryptor.tag


def aead_decrypt(suite: Suite, key: bytes, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
    """Check and decrypt ciphertext || tag; any mismatch raises DecryptionFailed."""
    if len(sealed) < TAG_SIZE:
        raise DecryptionFailed("ciphertext too short")
    try:
        if suite is Suite.AES_256_GCM:
            return AESGCM(key).decrypt(nonce, sealed, aad)
        body, tag = sealed[:-TAG_SIZE], sealed[-TAG_SIZE:]
        decryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce, tag)).decryptor()
        decryptor.authenticate_additional_data(aad)
        return decryptor.update(body) + decryptor.finalize()
    except (InvalidTag, ValueError) as exc:
        raise DecryptionFailed("ciphertext failed authentication") from exc


def _length_prefixed(*parts: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def field_aad(resident_id: str, field: str, key_version: int, suite: Suite) -> bytes:
    """Associated data that pins a ciphertext to its resident, field and key version."""
    rid, name = resident_id.encode(), field.encode()
    head = _AAD_FIELD.pack(b"rv-field-v1", len(rid))
    tail = _AAD_TAIL.pack(5, key_version, _SUITE_IDS[suite])  # 5: length of version + suite
    return head + rid + _AAD_LEN.pack(len(name)) + name + tail


_AAD_FIELD = struct.Struct(">11sI")  # domain label, then the resident id's length
_AAD_LEN = struct.Struct(">I")
_AAD_TAIL = struct.Struct(">IIB")


def data_key_context(resident_id: str, key_version: int) -> bytes:
    """Associated data for wrapping a data key, so a wrapped key cannot move between residents."""
    return b"rv-dek-v1" + _length_prefixed(resident_id.encode(), struct.pack(">I", key_version))


@dataclass(frozen=True)
class DataKey:
    """A resident's unwrapped data key. Lives only in memory (and the bounded key cache)."""

    resident_id: str
    version: int
    suite: Suite
    key: bytes
    # The AES key schedule, built once per data key rather than once per field.
    _aesgcm: AESGCM | None = dataclass_field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.suite is Suite.AES_256_GCM:
            object.__setattr__(self, "_aesgcm", AESGCM(self.key))

    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        if self._aesgcm is not None:
            return self._aesgcm.encrypt(nonce, plaintext, aad)
        return aead_encrypt(self.suite, self.key, nonce, plaintext, aad)

    def decrypt(self, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
        if self._aesgcm is not None:
            try:
                return self._aesgcm.decrypt(nonce, sealed, aad)
            except InvalidTag as exc:
                raise DecryptionFailed("ciphertext failed authentication") from exc
        return aead_decrypt(self.suite, self.key, nonce, sealed, aad)

    def __repr__(self) -> str:  # never print key material
        return (
            f"DataKey(resident_id={self.resident_id!r}, version={self.version}, suite={self.suite})"
        )


@dataclass(frozen=True)
class CiphertextHeader:
    suite: Suite
    key_version: int


def read_header(ciphertext: bytes, fmt_expected: int = FORMAT_VERSION) -> CiphertextHeader:
    if len(ciphertext) < HEADER_SIZE + TAG_SIZE:
        raise DecryptionFailed("ciphertext too short")
    fmt, suite_id, key_version = _HEADER.unpack_from(ciphertext)
    if fmt != fmt_expected:
        raise DecryptionFailed("unknown ciphertext format")
    return CiphertextHeader(suite=Suite.from_id(suite_id), key_version=key_version)


def seal_field(data_key: DataKey, field: str, plaintext: bytes) -> bytes:
    nonce = os.urandom(NONCE_SIZE)
    aad = field_aad(data_key.resident_id, field, data_key.version, data_key.suite)
    header = _HEADER.pack(FORMAT_VERSION, data_key.suite.suite_id, data_key.version)
    return header + nonce + data_key.encrypt(nonce, plaintext, aad)


def open_field(data_key: DataKey, field: str, ciphertext: bytes) -> bytes:
    header = read_header(ciphertext)
    if header.key_version != data_key.version or header.suite is not data_key.suite:
        raise DecryptionFailed("ciphertext was sealed under another data key")
    nonce = ciphertext[_HEADER.size : HEADER_SIZE]
    aad = field_aad(data_key.resident_id, field, header.key_version, header.suite)
    return data_key.decrypt(nonce, ciphertext[HEADER_SIZE:], aad)


def document_aad(resident_id: str, doc_class: str, key_version: int, suite: Suite) -> bytes:
    """Associated data that pins a document to its resident, sensitivity class and key version."""
    return b"rv-doc-v1" + _length_prefixed(
        resident_id.encode(),
        doc_class.encode(),
        struct.pack(">IB", key_version, _SUITE_IDS[suite]),
    )


def seal_document(data_key: DataKey, doc_class: str, plaintext: bytes) -> bytes:
    nonce = os.urandom(NONCE_SIZE)
    aad = document_aad(data_key.resident_id, doc_class, data_key.version, data_key.suite)
    header = _HEADER.pack(DOCUMENT_FORMAT, data_key.suite.suite_id, data_key.version)
    return header + nonce + data_key.encrypt(nonce, plaintext, aad)


def open_document(data_key: DataKey, doc_class: str, ciphertext: bytes) -> bytes:
    header = read_header(ciphertext, DOCUMENT_FORMAT)
    if header.key_version != data_key.version or header.suite is not data_key.suite:
        raise DecryptionFailed("document was sealed under another data key")
    nonce = ciphertext[_HEADER.size : HEADER_SIZE]
    aad = document_aad(data_key.resident_id, doc_class, header.key_version, header.suite)
    return data_key.decrypt(nonce, ciphertext[HEADER_SIZE:], aad)


def keyed_mac(algorithm: str, key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 or HMAC-SM3: the blind-index function."""
    if algorithm == "hmac-sha256":
        return hmac.new(key, message, hashlib.sha256).digest()
    if algorithm == "hmac-sm3":
        mac = crypto_hmac.HMAC(key, hashes.SM3())
        mac.update(message)
        return mac.finalize()
    raise ValueError(f"unknown MAC algorithm {algorithm!r}")


def blind_index_message(field: str, normalised_value: str) -> bytes:
    """Domain-separate by field, so equal digits in two fields do not share an index."""
    return _length_prefixed(b"rv-blind-index-v1", field.encode(), normalised_value.encode())
