"""The local keyring: key-encryption keys and the blind-index key in one file (mode 0600).

The embedded default. Production uses a PKCS#11 HSM behind the same `Keyring` interface.
The file is written atomically (temporary file, fsync, rename), so a crash during a
rotation leaves either the old or the new keyring, never half of one. Every change is a
read-modify-write under an exclusive lock on a sibling `.lock` file: the service and a
CLI command may hold the keyring at once, and a process with an older copy must never
drop a key the other added (a lost pseudonym or signing key cannot be made again).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from vault.crypto import Suite, aead_decrypt, aead_encrypt, keyed_mac, new_key
from vault.errors import ConfigurationError, DecryptionFailed, KeyNotFound
from vault.interfaces import KekInfo

KEYRING_FORMAT = 1
_WRAP_NONCE = 12


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


@dataclass
class _Kek:
    kek_id: str
    suite: Suite
    key: bytes
    created_at: datetime

    def __repr__(self) -> str:
        return f"_Kek({self.kek_id!r})"


class LocalKeyring:
    """A `Keyring` backed by a JSON file that `init` generates."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self._path = path
        self._adopt(data)

    def _adopt(self, data: dict[str, Any]) -> None:
        path = self._path
        self._suite = Suite(data["suite"])
        self._keks: dict[str, _Kek] = {}
        for raw in data["keks"]:
            kek = _Kek(
                kek_id=raw["id"],
                suite=Suite(raw["suite"]),
                key=_unb64(raw["key"]),
                created_at=datetime.fromisoformat(raw["created_at"]),
            )
            self._keks[kek.kek_id] = kek
        self._active = str(data["active_kek"])
        if self._active not in self._keks:
            raise ConfigurationError(f"keyring {path}: the active key is missing")
        bik = data["blind_index_key"]
        self._bik_id = str(bik["id"])
        self._bik_algorithm = str(bik["algorithm"])
        self._bik = _unb64(bik["key"])
        self._signing: dict[str, tuple[Ed25519PrivateKey, str]] = {
            name: (Ed25519PrivateKey.from_private_bytes(_unb64(raw["key"])), raw["created_at"])
            for name, raw in (data.get("signing_keys") or {}).items()
        }
        psk = data.get("pseudonym_key")
        self._psk: bytes | None = _unb64(psk["key"]) if psk else None
        self._extra = {k: v for k, v in data.items() if k not in _OWN_KEYS}

    # -- creation and loading -------------------------------------------------------------

    @classmethod
    def create(cls, path: Path, suite: Suite = Suite.AES_256_GCM) -> LocalKeyring:
        if path.exists():
            raise ConfigurationError(f"keyring {path} already exists; refusing to overwrite keys")
        now = datetime.now(UTC)
        data: dict[str, Any] = {
            "format": KEYRING_FORMAT,
            "suite": suite.value,
            "created_at": now.isoformat(),
            "keks": [],
            "active_kek": "",
            "blind_index_key": {
                "id": f"bik-{secrets.token_hex(4)}",
                "algorithm": suite.hmac_algorithm,
                "key": _b64(os.urandom(32)),
            },
            "pseudonym_key": {"created_at": now.isoformat(), "key": _b64(os.urandom(32))},
        }
        kek_id = _new_kek_id(1)
        data["keks"].append(
            {
                "id": kek_id,
                "suite": suite.value,
                "key": _b64(new_key(suite)),
                "created_at": now.isoformat(),
            }
        )
        data["active_kek"] = kek_id
        keyring = cls(path, data)
        keyring._save()
        return keyring

    @classmethod
    def load(cls, path: Path) -> LocalKeyring:
        if not path.exists():
            raise ConfigurationError(
                f"no keyring at {path}; run `resident-vault init` first (the service never "
                "starts without its keys)"
            )
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigurationError(
                f"keyring {path} is readable by others (mode {mode:o}); run chmod 600 on it"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != KEYRING_FORMAT:
                raise ConfigurationError(f"keyring {path}: unsupported format")
            return cls(path, data)
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(f"keyring {path} is damaged: {type(exc).__name__}") from exc

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """Lock, take the file's current keys, let the caller change them, then save."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(
            self._path.with_name(self._path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600
        )
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self._path.exists():
                self._adopt(json.loads(self._path.read_text(encoding="utf-8")))
            yield
            self._save()
        finally:
            os.close(lock)  # closing releases the lock

    def _save(self) -> None:
        data = {
            **self._extra,
            "format": KEYRING_FORMAT,
            "suite": self._suite.value,
            "keks": [
                {
                    "id": k.kek_id,
                    "suite": k.suite.value,
                    "key": _b64(k.key),
                    "created_at": k.created_at.isoformat(),
                }
                for k in self._keks.values()
            ],
            "active_kek": self._active,
            "blind_index_key": {
                "id": self._bik_id,
                "algorithm": self._bik_algorithm,
                "key": _b64(self._bik),
            },
            **({"pseudonym_key": {"key": _b64(self._psk)}} if self._psk else {}),
            "signing_keys": {
                name: {
                    "algorithm": "ed25519",
                    "created_at": created,
                    "key": _b64(key.private_bytes_raw()),
                }
                for name, (key, created) in self._signing.items()
            },
        }
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_name(self._path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self._path)

    # -- Keyring ---------------------------------------------------------------------------

    @property
    def suite(self) -> Suite:
        return self._suite

    @property
    def blind_index_scheme(self) -> str:
        return f"{self._bik_algorithm}:{self._bik_id}"

    def active_kek_id(self) -> str:
        return self._active

    def keks(self) -> list[KekInfo]:
        return [
            KekInfo(k.kek_id, k.suite, k.created_at, k.kek_id == self._active)
            for k in self._keks.values()
        ]

    def wrap(self, data_key: bytes, context: bytes) -> tuple[str, bytes]:
        kek = self._keks[self._active]
        nonce = os.urandom(_WRAP_NONCE)
        return kek.kek_id, nonce + aead_encrypt(kek.suite, kek.key, nonce, data_key, context)

    def unwrap(self, kek_id: str, wrapped: bytes, context: bytes) -> bytes:
        kek = self._keks.get(kek_id)
        if kek is None:
            raise KeyNotFound(f"key-encryption key {kek_id} is not in this keyring")
        if len(wrapped) <= _WRAP_NONCE:
            raise DecryptionFailed("wrapped key too short")
        nonce, sealed = wrapped[:_WRAP_NONCE], wrapped[_WRAP_NONCE:]
        return aead_decrypt(kek.suite, kek.key, nonce, sealed, context)

    def rotate_kek(self) -> str:
        with self._changing():
            kek_id = _new_kek_id(len(self._keks) + 1)
            now = datetime.now(UTC)
            self._keks[kek_id] = _Kek(kek_id, self._suite, new_key(self._suite), now)
            self._active = kek_id
        return kek_id

    def destroy_kek(self, kek_id: str) -> None:
        with self._changing():
            if kek_id == self._active:
                raise ConfigurationError("the active key-encryption key cannot be destroyed")
            if kek_id not in self._keks:
                raise KeyNotFound(f"key-encryption key {kek_id} is not in this keyring")
            del self._keks[kek_id]

    def blind_index(self, message: bytes) -> bytes:
        return keyed_mac(self._bik_algorithm, self._bik, message)

    def pseudonym_key(self, recipient: str) -> bytes:
        if self._psk is None:  # a keyring made before pseudonyms existed gets its key once
            with self._changing():
                if self._psk is None:  # another process may have made it meanwhile
                    self._psk = os.urandom(32)
        return HKDF(
            algorithm=hashes.SHA256(),
            length=64,
            salt=None,
            info=b"resident-vault/pseudonym/v1\x00" + recipient.encode(),
        ).derive(self._psk)

    def _signing_key(self, name: str) -> Ed25519PrivateKey:
        if name not in self._signing:
            with self._changing():
                if name not in self._signing:  # another process may have made it meanwhile
                    made = datetime.now(UTC).isoformat()
                    self._signing[name] = (Ed25519PrivateKey.generate(), made)
        return self._signing[name][0]

    def signing_public_key(self, name: str) -> bytes:
        return self._signing_key(name).public_key().public_bytes_raw()

    def sign(self, name: str, message: bytes) -> bytes:
        return self._signing_key(name).sign(message)


_OWN_KEYS = frozenset(
    {"format", "suite", "keks", "active_kek", "blind_index_key", "pseudonym_key", "signing_keys"}
)


def _new_kek_id(sequence: int) -> str:
    return f"kek-{sequence:04d}-{secrets.token_hex(3)}"
