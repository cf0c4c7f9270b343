"""Moving a vault's keys from the local keyring file into a PKCS#11 token, losing nothing.

Every key is imported under its old id (so wrapped data keys, blind indexes, pseudonyms
and signatures stay valid), then checked against the local keyring with real data from
the database, and only then is the token's keyring record written, the step that makes
the token a usable keyring. A run that stops half-way leaves objects under the prefix
but no record; the next run imports what is missing and checks everything again. A token
that holds anything under the prefix that this migration would not have made is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from pkcs11 import ObjectClass
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from vault.config import VaultSettings
from vault.crypto import Suite, aead_encrypt, blind_index_message, data_key_context
from vault.errors import ConfigurationError
from vault.keyring import LocalKeyring
from vault.models import DataKeyRecord
from vault.pkcs11_keyring import (
    Pkcs11Config,
    Pkcs11Keyring,
    TokenObjects,
    kek_record,
    keyring_record,
)

log = structlog.get_logger(__name__)

MIGRATED_SUFFIX = ".migrated"
_ZERO_SALT = bytes(32)  # HKDF with salt=None uses HashLen zero bytes (RFC 5869 §2.2)


@dataclass(frozen=True)
class _LocalKek:
    kek_id: str
    suite: Suite
    key: bytes
    created_at: str

    def __repr__(self) -> str:
        return f"_LocalKek({self.kek_id!r})"


@dataclass(frozen=True)
class LocalMaterial:
    """The local keyring file's keys, read once for the import (never logged or printed)."""

    suite: Suite
    keks: list[_LocalKek]
    active: str
    bik_id: str
    bik_algorithm: str
    bik: bytes
    psk: bytes | None
    signing_seeds: dict[str, bytes]

    def __repr__(self) -> str:
        return f"LocalMaterial(keks={[k.kek_id for k in self.keks]}, bik={self.bik_id!r})"

    @property
    def pseudonym_prk(self) -> bytes | None:
        """HKDF-Extract of the pseudonym master key: what the token keeps instead of it."""
        return hmac_sha256(_ZERO_SALT, self.psk) if self.psk is not None else None

    def ordered_keks(self) -> list[tuple[int, _LocalKek]]:
        """Sequence numbers for the token: file order, the active KEK last (highest)."""
        rest = [k for k in self.keks if k.kek_id != self.active]
        active = [k for k in self.keks if k.kek_id == self.active]
        return list(enumerate(rest + active, start=1))

    def fingerprint(self) -> str:
        """Names this keyring by public facts only (ids, suite, signing public keys)."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
            Ed25519PrivateKey,
        )

        facts = {
            "suite": self.suite.value,
            "keks": sorted(k.kek_id for k in self.keks),
            "bik": self.bik_id,
            "signing": {
                name: Ed25519PrivateKey.from_private_bytes(seed)
                .public_key()
                .public_bytes_raw()
                .hex()
                for name, seed in sorted(self.signing_seeds.items())
            },
        }
        return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:32]


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def read_local(path: Path) -> LocalMaterial:
    """The local keyring's keys; the same checks as loading it (present, 0600, format)."""
    LocalKeyring.load(path)
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))

    def raw(text: str) -> bytes:
        return base64.b64decode(text, validate=True)

    psk = data.get("pseudonym_key")
    return LocalMaterial(
        suite=Suite(data["suite"]),
        keks=[
            _LocalKek(str(k["id"]), Suite(k["suite"]), raw(k["key"]), str(k["created_at"]))
            for k in data["keks"]
        ],
        active=str(data["active_kek"]),
        bik_id=str(data["blind_index_key"]["id"]),
        bik_algorithm=str(data["blind_index_key"]["algorithm"]),
        bik=raw(data["blind_index_key"]["key"]),
        psk=raw(psk["key"]) if psk else None,
        signing_seeds={
            name: raw(item["key"]) for name, item in (data.get("signing_keys") or {}).items()
        },
    )


@dataclass(frozen=True)
class MigrationReport:
    token_label: str
    prefix: str
    keks: list[str]
    active_kek: str
    signing_keys: list[str]
    data_keys_checked: int
    resumed: bool

    def details(self) -> dict[str, Any]:
        """What the audit entry records (ids and counts, never key material)."""
        return {
            "to": "pkcs11",
            "token": self.token_label,
            "prefix": self.prefix,
            "keks": self.keks,
            "active_kek": self.active_kek,
            "signing_keys": self.signing_keys,
            "data_keys_checked": self.data_keys_checked,
            "resumed": self.resumed,
        }


def _expected(objects: TokenObjects, material: LocalMaterial) -> set[tuple[ObjectClass, str]]:
    labels: set[tuple[ObjectClass, str]] = set()
    for kek in material.keks:
        labels |= {
            (ObjectClass.SECRET_KEY, objects.label("kek", kek.kek_id)),
            (ObjectClass.DATA, objects.label("kek", kek.kek_id)),
        }
    labels.add((ObjectClass.SECRET_KEY, objects.label("bik", material.bik_id)))
    labels.add((ObjectClass.SECRET_KEY, objects.label("pseudonym-prk")))
    for name in material.signing_seeds:
        labels.add((ObjectClass.PRIVATE_KEY, objects.label("sign", name)))
        labels.add((ObjectClass.PUBLIC_KEY, objects.label("sign", name)))
    return labels


def _import_missing(
    objects: TokenObjects, material: LocalMaterial, present: set[tuple[ObjectClass, str]]
) -> None:
    for sequence, kek in material.ordered_keks():
        label = objects.label("kek", kek.kek_id)
        if (ObjectClass.SECRET_KEY, label) not in present:
            objects.create_aes_key(label, kek.key)
        if (ObjectClass.DATA, label) not in present:
            objects.write_data(label, kek_record(kek.kek_id, sequence, kek.created_at))
    bik_label = objects.label("bik", material.bik_id)
    if (ObjectClass.SECRET_KEY, bik_label) not in present:
        objects.create_hmac_key(bik_label, material.bik)
    prk_label = objects.label("pseudonym-prk")
    if (ObjectClass.SECRET_KEY, prk_label) not in present:
        # A keyring that never issued a pseudonym has no master key: the token makes one.
        objects.create_hmac_key(prk_label, material.pseudonym_prk)
    for name, seed in material.signing_seeds.items():
        label = objects.label("sign", name)
        halves = {(ObjectClass.PRIVATE_KEY, label), (ObjectClass.PUBLIC_KEY, label)}
        if halves <= present:
            continue
        # One half only: the last run stopped between the two objects. Ours; make it again.
        objects.destroy(ObjectClass.PRIVATE_KEY, label)
        objects.destroy(ObjectClass.PUBLIC_KEY, label)
        objects.create_signing_key(name, seed)


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise ConfigurationError(
            f"migration check failed: {what}; nothing was switched and the local keyring "
            "is untouched"
        )


def _sample_records(session: Session, sample_size: int) -> list[DataKeyRecord]:
    """One data key per KEK in use, plus a random sample."""
    records: dict[tuple[str, int], DataKeyRecord] = {}
    for kek_id in session.scalars(select(DataKeyRecord.kek_id).distinct()):
        first = session.scalars(
            select(DataKeyRecord).where(DataKeyRecord.kek_id == kek_id).limit(1)
        ).one()
        records[(first.resident_id, first.version)] = first
    for record in session.scalars(select(DataKeyRecord).order_by(func.random()).limit(sample_size)):
        records[(record.resident_id, record.version)] = record
    return list(records.values())


def verify_against_local(
    local: LocalKeyring,
    token: Pkcs11Keyring,
    material: LocalMaterial,
    sessions: sessionmaker[Session],
    sample_size: int = 200,
) -> int:
    """Both keyrings agree on every key; returns the number of stored data keys compared."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
        Ed25519PublicKey,
    )

    _check(token.suite is material.suite, "the suites differ")
    _check(token.active_kek_id() == material.active, "the active KEKs differ")
    _check(token.blind_index_scheme == local.blind_index_scheme, "the blind-index ids differ")
    _check(
        {k.kek_id for k in token.keks()} == {k.kek_id for k in material.keks},
        "the KEK ids differ",
    )
    for kek in material.keks:  # every KEK, used or not: sealed by one, opened by the other
        probe, context = os.urandom(32), b"rv-migration-check" + kek.kek_id.encode()
        nonce = os.urandom(12)
        sealed = nonce + aead_encrypt(kek.suite, kek.key, nonce, probe, context)
        _check(token.unwrap(kek.kek_id, sealed, context) == probe, f"KEK {kek.kek_id} differs")
    kek_id, wrapped = token.wrap(b"p" * 32, b"rv-migration-check")
    _check(local.unwrap(kek_id, wrapped, b"rv-migration-check") == b"p" * 32, "wrapping differs")
    with sessions() as session:
        records = _sample_records(session, sample_size)
        in_use = set(session.scalars(select(DataKeyRecord.kek_id).distinct()))
    _check(in_use <= {k.kek_id for k in material.keks}, "data keys use a KEK the file lacks")
    for record in records:
        context = data_key_context(record.resident_id, record.version)
        _check(
            token.unwrap(record.kek_id, record.wrapped, context)
            == local.unwrap(record.kek_id, record.wrapped, context),
            f"the data key of {record.resident_id} opens differently",
        )
    messages = [b"", blind_index_message("phone", "13800000000")]
    messages += [secrets.token_bytes(n) for n in (1, 16, 64, 200)]
    for message in messages:
        _check(token.blind_index(message) == local.blind_index(message), "blind indexes differ")
    if material.psk is not None:  # else the local keyring never issued a pseudonym
        for recipient in ["org:check", "汉字", secrets.token_hex(8)]:
            _check(
                token.pseudonym_key(recipient) == local.pseudonym_key(recipient),
                "pseudonym keys differ",
            )
    for name in material.signing_seeds:
        public = local.signing_public_key(name)
        _check(token.signing_public_key(name) == public, f"signing key {name} differs")
        message = b"rv-migration-check " + name.encode()
        Ed25519PublicKey.from_public_bytes(public).verify(token.sign(name, message), message)
    return len(records)


def migrate_to_pkcs11(
    settings: VaultSettings,
    local: LocalKeyring,
    sessions: sessionmaker[Session],
    *,
    sample_size: int = 200,
) -> MigrationReport:
    """Import the local keyring into the token, check it, then make the token a keyring.

    Idempotent: after a crash, or once finished, running it again completes or re-checks.
    The local file is not touched here (see `retire_local_keyring`).
    """
    material = read_local(settings.keyring_path)
    objects = TokenObjects(Pkcs11Config.from_settings(settings))
    objects.check_mechanisms(material.suite)
    _check(all(k.suite is Suite.AES_256_GCM for k in material.keks), "a KEK is not AES-256")
    source = f"migrated:{material.fingerprint()}"
    record_label = objects.label("keyring")
    with objects.session():  # one lock for the whole import: no other thread interleaves
        record = objects.data(record_label)
        present = set(objects.labels())
        if record is not None:
            if record.get("source") != source:
                raise ConfigurationError(
                    f"PKCS#11 token {objects.token_label!r} already holds another keyring "
                    f"under prefix {objects.prefix!r}; refusing to mix keys (choose another "
                    "VAULT_PKCS11_KEY_PREFIX)"
                )
            complete = True
        else:
            foreign = sorted(label for _cls, label in present - _expected(objects, material))
            if foreign:
                raise ConfigurationError(
                    f"PKCS#11 token {objects.token_label!r} holds objects under prefix "
                    f"{objects.prefix!r} that are not this vault's keys "
                    f"({', '.join(foreign[:3])}); refusing to mix keys"
                )
            complete = False
            _import_missing(objects, material, present)
            record = keyring_record(material.suite, material.bik_id, source=source)
            record["blind_index"]["algorithm"] = material.bik_algorithm
    token = Pkcs11Keyring(objects, record)
    checked = verify_against_local(local, token, material, sessions, sample_size)
    if not complete:
        objects.write_data(record_label, record)  # the switch: the token is now a keyring
    log.info(
        "keyring.migrated",
        token=objects.token_label,
        prefix=objects.prefix,
        keks=len(material.keks),
        data_keys_checked=checked,
        resumed=bool(present),
    )
    return MigrationReport(
        token_label=objects.token_label,
        prefix=objects.prefix,
        keks=[k.kek_id for _seq, k in material.ordered_keks()],
        active_kek=material.active,
        signing_keys=sorted(material.signing_seeds),
        data_keys_checked=checked,
        resumed=bool(present),
    )


def token_holds_migrated_keyring(settings: VaultSettings) -> bool:
    """True if the token already has a keyring under the prefix made by a migration."""
    objects = TokenObjects(Pkcs11Config.from_settings(settings))
    record = objects.data(objects.label("keyring"))
    return record is not None and str(record.get("source", "")).startswith("migrated:")


def migrated_path(settings: VaultSettings) -> Path:
    return settings.keyring_path.with_name(settings.keyring_path.name + MIGRATED_SUFFIX)


def retire_local_keyring(settings: VaultSettings, *, destroy: bool) -> Path | None:
    """Rename the local file to keyring.json.migrated (0600), or overwrite and delete it.

    Call only after `migrate_to_pkcs11` returned: the token then holds every key.
    """
    path, renamed = settings.keyring_path, migrated_path(settings)
    if not destroy:
        if path.exists():
            os.chmod(path, 0o600)
            os.replace(path, renamed)
            _fsync_directory(path.parent)
        return renamed if renamed.exists() else None
    for victim in (path, renamed):
        if victim.exists():
            size = victim.stat().st_size
            with victim.open("r+b") as handle:
                handle.write(os.urandom(size))
                handle.flush()
                os.fsync(handle.fileno())
            victim.unlink()
    _fsync_directory(path.parent)
    return None


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
