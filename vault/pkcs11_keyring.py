"""The PKCS#11 keyring: every long-lived key inside an HSM, behind the same `Keyring`.

Objects live in the token under labels `<prefix>/...` (see docs/hsm-keyring.md), so the
token alone is the keyring and several vaults can share one token by prefix:

- `<prefix>/kek/<id>`: an AES-256 secret key (sensitive, non-extractable) plus a data
  object with its id, creation time and sequence number; the highest sequence is active.
- `<prefix>/bik/<id>`: the blind-index key, a GENERIC_SECRET used with CKM_SHA256_HMAC.
- `<prefix>/pseudonym-prk`: the HKDF pseudorandom key of the pseudonym keys (GENERIC_SECRET).
- `<prefix>/sign/<name>`: an Ed25519 key pair (CKM_EDDSA), made on first use.
- `<prefix>/keyring`: a data object with the suite and the blind-index id, written last,
  so a token with keys but without it holds an unfinished init or migration.

Every object is written once and never modified (SoftHSM refuses to change a data
object's value): rotation adds objects, destruction removes them. PKCS#11 labels are not
unique, so a look-up that finds two objects refuses instead of guessing.

Data keys are sealed with CKM_AES_GCM under the KEK, the wrapping context as associated
data: decryption returns the key's bytes, which the vault needs for AES-GCM in Python
(NOTES.md), and the layout (nonce || ciphertext || tag) equals the local keyring's, so
data keys wrapped before a migration still open.

Threads: python-pkcs11 initialises the module with `C_Initialize(NULL)`, which tells it
the application will not call it from several threads at once, and it releases the GIL
during calls. So each (module, token) pair has one logged-in session per process behind
one lock; a session pool would not be safe without the module's own locking, and every
call takes tens of microseconds, far less than a request. PKCS#11 login state is shared
by all sessions of a process, so the session stays open for the process's lifetime.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import pkcs11
import structlog
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.mechanisms import GCMParams
from pkcs11.util.ec import encode_named_curve_parameters

from vault.config import VaultSettings
from vault.crypto import Suite
from vault.errors import ConfigurationError, DecryptionFailed, KeyNotFound
from vault.interfaces import KekInfo

log = structlog.get_logger(__name__)

RECORD_FORMAT = 1
_WRAP_NONCE = 12
_ED25519_OID = "1.3.101.112"
_PSEUDONYM_INFO = b"resident-vault/pseudonym/v1\x00"
# How long a process trusts its view of the active KEK before looking at the token again,
# so a service notices a rotation made by the CLI before old KEKs are destroyed.
_KEK_REFRESH_SECONDS = 5.0
# Mechanisms the keyring needs; a module without one fails at start-up, not on first use.
_REQUIRED = (
    Mechanism.AES_KEY_GEN,
    Mechanism.AES_GCM,
    Mechanism.GENERIC_SECRET_KEY_GEN,
    Mechanism.SHA256_HMAC,
    Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
    Mechanism.EDDSA,
)
# Errors a decryption raises when the sealed bytes or the context are wrong (SoftHSM says
# GeneralError for a failed GCM tag); anything else is a real fault and propagates.
_OPEN_FAILURES = (
    p11.GeneralError,
    p11.FunctionFailed,
    p11.EncryptedDataInvalid,
    p11.EncryptedDataLenRange,
    p11.DataLenRange,
    p11.ArgumentsBad,
    p11.MechanismParamInvalid,
)

# The module lost our session: the HSM restarted, failed over or was unplugged. Reconnect
# (log in again, look the keys up again) and retry once; if the token is still gone the
# error propagates and readiness reports the keyring until it is back.
_SESSION_LOST = (
    p11.SessionHandleInvalid,
    p11.SessionClosed,
    p11.DeviceRemoved,
    p11.TokenNotPresent,
    p11.UserNotLoggedIn,
    p11.DeviceError,
)

T = TypeVar("T")
P = ParamSpec("P")
# python-pkcs11 builds key classes from mixins (EncryptMixin, SignMixin...) at run time,
# which its stubs cannot name; key handles are typed loosely for that reason.
KeyHandle = Any


@dataclass(frozen=True)
class Pkcs11Config:
    """Where the keys are: module, token, PIN and this vault's label prefix."""

    module: Path
    token_label: str
    pin: str
    prefix: str

    def __repr__(self) -> str:  # never print the PIN
        return f"Pkcs11Config({str(self.module)!r}, {self.token_label!r}, prefix={self.prefix!r})"

    @classmethod
    def from_settings(cls, settings: VaultSettings) -> Pkcs11Config:
        if not settings.pkcs11_token_label:
            raise ConfigurationError("VAULT_KEYRING=pkcs11 needs VAULT_PKCS11_TOKEN_LABEL")
        if settings.pkcs11_pin is None or not settings.pkcs11_pin.get_secret_value():
            raise ConfigurationError("VAULT_KEYRING=pkcs11 needs VAULT_PKCS11_PIN")
        return cls(
            settings.pkcs11_module,
            settings.pkcs11_token_label,
            settings.pkcs11_pin.get_secret_value(),
            settings.pkcs11_key_prefix,
        )


# -- one logged-in session per module and token in this process ----------------------------


class _Connection:
    def __init__(self, session: pkcs11.Session, token_label: str, pin_digest: bytes) -> None:
        self.session = session
        self.token_label = token_label
        self.pin_digest = pin_digest
        self.lock = threading.RLock()


_connections: dict[tuple[str, str], _Connection] = {}
_connections_lock = threading.Lock()
_PIN_SALT = os.urandom(16)  # digests of PINs compared in memory, never stored


def _pin_digest(pin: str) -> bytes:
    return hashlib.sha256(_PIN_SALT + pin.encode()).digest()


def _connect(config: Pkcs11Config) -> _Connection:
    key = (str(config.module.resolve()), config.token_label)
    with _connections_lock:
        known = _connections.get(key)
        if known is not None:
            # A second login in the same process is refused by the module without checking
            # the PIN (UserAlreadyLoggedIn), so compare it with the one that logged in.
            if not hmac.compare_digest(known.pin_digest, _pin_digest(config.pin)):
                raise _wrong_pin(config)
            return known
        if not config.module.is_file():
            raise ConfigurationError(
                f"PKCS#11 module {config.module} not found (VAULT_PKCS11_MODULE)"
            )
        try:
            library = pkcs11.lib(str(config.module))
        except p11.PKCS11Error as exc:
            raise ConfigurationError(
                f"PKCS#11 module {config.module} cannot be loaded ({type(exc).__name__})"
            ) from None
        try:
            token = library.get_token(token_label=config.token_label)
        except p11.NoSuchToken:
            raise ConfigurationError(
                f"no PKCS#11 token labelled {config.token_label!r} in {config.module} "
                "(VAULT_PKCS11_TOKEN_LABEL)"
            ) from None
        except p11.MultipleTokensReturned:
            raise ConfigurationError(
                f"several PKCS#11 tokens are labelled {config.token_label!r}; labels must differ"
            ) from None
        try:
            session = token.open(rw=True, user_pin=config.pin)
        except (p11.PinIncorrect, p11.PinLenRange):
            raise _wrong_pin(config) from None
        except p11.PinLocked:
            raise ConfigurationError(
                f"PKCS#11 token {config.token_label!r}: the user PIN is locked (too many "
                "wrong attempts); the security officer must unlock it"
            ) from None
        except p11.PKCS11Error as exc:
            raise ConfigurationError(
                f"PKCS#11 token {config.token_label!r}: cannot log in ({type(exc).__name__})"
            ) from None
        connection = _Connection(session, config.token_label, _pin_digest(config.pin))
        _connections[key] = connection
        log.info("keyring.pkcs11_connected", token=config.token_label, module=str(config.module))
        return connection


def _reconnect(config: Pkcs11Config, stale: _Connection) -> _Connection:
    """A fresh logged-in session in place of `stale` (unless another user of the same
    connection has already replaced it)."""
    key = (str(config.module.resolve()), config.token_label)
    with _connections_lock:
        if _connections.get(key) is stale:
            del _connections[key]
            with contextlib.suppress(p11.PKCS11Error):  # gone with the token's restart
                stale.session.close()
    return _connect(config)


def _wrong_pin(config: Pkcs11Config) -> ConfigurationError:
    return ConfigurationError(
        f"PKCS#11 token {config.token_label!r}: the PIN is incorrect (VAULT_PKCS11_PIN)"
    )


# -- the objects under one prefix ----------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _ed25519_public_from_point(point: bytes) -> bytes:
    # CKA_EC_POINT is a DER OCTET STRING (04 20 || key); some modules store the raw key.
    if len(point) == 34 and point[:2] == b"\x04\x20":
        return point[2:]
    if len(point) == 32:
        return point
    raise ConfigurationError("an Ed25519 public key in the token has an unexpected encoding")


class TokenObjects:
    """The objects of one vault (one label prefix) in a token; the keyring's storage.

    Also the interface the migration uses to import existing keys.
    """

    def __init__(self, config: Pkcs11Config) -> None:
        self.config = config
        self.prefix = config.prefix
        self._connection = _connect(config)

    @property
    def token_label(self) -> str:
        return self.config.token_label

    def reconnect(self) -> None:
        self._connection = _reconnect(self.config, self._connection)
        log.info("keyring.pkcs11_reconnected", token_label=self.token_label)

    @contextmanager
    def session(self) -> Iterator[pkcs11.Session]:
        with self._connection.lock:
            yield self._connection.session

    def label(self, *parts: str) -> str:
        return "/".join((self.prefix, *parts))

    def call(self, operation: Callable[[pkcs11.Session], T]) -> T:
        with self.session() as session:
            return operation(session)

    # -- look-ups ------------------------------------------------------------------------

    def find(self, object_class: ObjectClass, label: str) -> pkcs11.Object | None:
        with self.session() as session:
            found = list(
                session.get_objects({Attribute.CLASS: object_class, Attribute.LABEL: label})
            )
        if len(found) > 1:
            raise ConfigurationError(
                f"token {self.token_label!r} holds {len(found)} objects labelled {label!r}; "
                "labels under a vault's prefix must be unique (remove the extra ones)"
            )
        return found[0] if found else None

    def labels(self) -> list[tuple[ObjectClass, str]]:
        """Class and label of every object under the prefix."""
        start = self.prefix + "/"
        result = []
        with self.session() as session:
            for obj in session.get_objects():
                label = obj[Attribute.LABEL]
                if isinstance(label, str) and label.startswith(start):
                    result.append((ObjectClass(obj[Attribute.CLASS]), label))
        return result

    def data(self, label: str) -> dict[str, Any] | None:
        obj = self.find(ObjectClass.DATA, label)
        if obj is None:
            return None
        with self.session():
            raw = bytes(obj[Attribute.VALUE])
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise ConfigurationError(f"token object {label!r} is damaged") from exc
        if not isinstance(value, dict):
            raise ConfigurationError(f"token object {label!r} is damaged")
        return value

    def data_under(self, *parts: str) -> list[dict[str, Any]]:
        start = self.label(*parts) + "/"
        values = []
        with self.session() as session:
            for obj in session.get_objects({Attribute.CLASS: ObjectClass.DATA}):
                label = obj[Attribute.LABEL]
                if isinstance(label, str) and label.startswith(start):
                    values.append(json.loads(bytes(obj[Attribute.VALUE])))
        return values

    # -- creation (write once) -----------------------------------------------------------

    def _refuse_existing(self, object_class: ObjectClass, label: str) -> None:
        if self.find(object_class, label) is not None:
            raise ConfigurationError(f"token {self.token_label!r} already holds {label!r}")

    def write_data(self, label: str, value: dict[str, Any]) -> None:
        with self.session() as session:
            self._refuse_existing(ObjectClass.DATA, label)
            session.create_object(
                {
                    Attribute.CLASS: ObjectClass.DATA,
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                    Attribute.MODIFIABLE: False,
                    Attribute.LABEL: label,
                    Attribute.APPLICATION: "resident-vault",
                    Attribute.VALUE: json.dumps(value, sort_keys=True).encode(),
                }
            )

    def create_aes_key(self, label: str, value: bytes | None = None) -> KeyHandle:
        """An AES-256 key for CKM_AES_GCM only; generated in the token unless imported."""
        template: dict[Attribute, Any] = {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.MODIFIABLE: False,
            Attribute.ENCRYPT: True,
            Attribute.DECRYPT: True,
            Attribute.WRAP: False,
            Attribute.UNWRAP: False,
            Attribute.SIGN: False,
            Attribute.VERIFY: False,
            Attribute.DERIVE: False,
            Attribute.LABEL: label,
            Attribute.ID: os.urandom(16),
        }
        return self._create_secret(KeyType.AES, label, template, value)

    def create_hmac_key(self, label: str, value: bytes | None = None) -> KeyHandle:
        """A GENERIC_SECRET for HMAC (sign/verify only); generated unless imported."""
        template: dict[Attribute, Any] = {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.MODIFIABLE: False,
            Attribute.SIGN: True,
            Attribute.VERIFY: True,
            Attribute.ENCRYPT: False,
            Attribute.DECRYPT: False,
            Attribute.WRAP: False,
            Attribute.UNWRAP: False,
            Attribute.DERIVE: False,
            Attribute.LABEL: label,
            Attribute.ID: os.urandom(16),
        }
        return self._create_secret(KeyType.GENERIC_SECRET, label, template, value)

    def _create_secret(
        self, key_type: KeyType, label: str, template: dict[Attribute, Any], value: bytes | None
    ) -> KeyHandle:
        with self.session() as session:
            self._refuse_existing(ObjectClass.SECRET_KEY, label)
            if value is None:
                return session.generate_key(
                    key_type, 256, label=label, store=True, template=template
                )
            created = session.create_object(
                {
                    **template,
                    Attribute.CLASS: ObjectClass.SECRET_KEY,
                    Attribute.KEY_TYPE: key_type,
                    Attribute.VALUE: value,
                }
            )
        assert isinstance(created, pkcs11.SecretKey)  # noqa: S101 - a secret key's class
        return created

    def create_signing_key(self, name: str, seed: bytes | None = None) -> bytes:
        """An Ed25519 key pair (imported from its 32-byte seed if given); its public key."""
        label = self.label("sign", name)
        params = encode_named_curve_parameters(_ED25519_OID)
        object_id = os.urandom(16)
        private_template: dict[Attribute, Any] = {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.MODIFIABLE: False,
            Attribute.SIGN: True,
            Attribute.DECRYPT: False,
            Attribute.UNWRAP: False,
            Attribute.DERIVE: False,
            Attribute.LABEL: label,
            Attribute.ID: object_id,
        }
        public_template: dict[Attribute, Any] = {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: False,
            Attribute.MODIFIABLE: False,
            Attribute.VERIFY: True,
            Attribute.ENCRYPT: False,
            Attribute.WRAP: False,
            Attribute.DERIVE: False,
            Attribute.LABEL: label,
            Attribute.ID: object_id,
        }
        with self.session() as session:
            self._refuse_existing(ObjectClass.PRIVATE_KEY, label)
            self._refuse_existing(ObjectClass.PUBLIC_KEY, label)
            if seed is None:
                public, _private = session.generate_keypair(
                    KeyType.EC_EDWARDS,
                    store=True,
                    public_template={**public_template, Attribute.EC_PARAMS: params},
                    private_template=private_template,
                )
                return _ed25519_public_from_point(bytes(public[Attribute.EC_POINT]))
            # Import: the private key's CKA_VALUE is the RFC 8032 seed, the public key's
            # CKA_EC_POINT the DER OCTET STRING of the 32-byte public key.
            from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
                Ed25519PrivateKey,
            )

            raw_public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
            session.create_object(
                {
                    **private_template,
                    Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                    Attribute.KEY_TYPE: KeyType.EC_EDWARDS,
                    Attribute.EC_PARAMS: params,
                    Attribute.VALUE: seed,
                }
            )
            session.create_object(
                {
                    **public_template,
                    Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                    Attribute.KEY_TYPE: KeyType.EC_EDWARDS,
                    Attribute.EC_PARAMS: params,
                    Attribute.EC_POINT: b"\x04\x20" + raw_public,
                }
            )
            return raw_public

    def destroy(self, object_class: ObjectClass, label: str) -> bool:
        with self.session():
            obj = self.find(object_class, label)
            if obj is None:
                return False
            obj.destroy()
            return True

    def check_mechanisms(self, suite: Suite) -> None:
        with self.session() as session:
            available = session.token.slot.get_mechanisms()
        missing = [m.name for m in _REQUIRED if m not in available]
        if missing:
            raise ConfigurationError(
                f"PKCS#11 token {self.token_label!r} lacks {', '.join(missing)}"
            )
        if suite.hmac_algorithm != "hmac-sha256":
            # python-pkcs11 names no CKM_SM3_HMAC and SoftHSM2 has none; a GM/T module's
            # vendor mechanism would be added here once we have one to test against.
            raise ConfigurationError(
                f"PKCS#11 token {self.token_label!r} offers no {suite.hmac_algorithm} "
                f"mechanism, which the {suite.value} suite needs for the blind index"
            )


# -- the keyring -------------------------------------------------------------------------


@dataclass
class _Kek:
    kek_id: str
    sequence: int
    created_at: datetime
    key: KeyHandle | None = None  # the token object, found on first use

    def __repr__(self) -> str:
        return f"_Kek({self.kek_id!r})"


def _reconnecting(
    method: Callable[Concatenate[Pkcs11Keyring, P], T],
) -> Callable[Concatenate[Pkcs11Keyring, P], T]:
    """Retry a keyring operation once on a fresh session if the module lost ours.

    python-pkcs11 finalises an operation begun on the lost session (a search) when it is
    garbage, which fails again and prints "Exception ignored in ... OperationContext.__del__"
    to stderr once per such operation: noise, not a fault."""

    @functools.wraps(method)
    def wrapper(keyring: Pkcs11Keyring, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(keyring, *args, **kwargs)
        except _SESSION_LOST as exc:
            log.warning("keyring.pkcs11_session_lost", error=type(exc).__name__)
            keyring._reconnect()
            return method(keyring, *args, **kwargs)

    return wrapper


class Pkcs11Keyring:
    """A `Keyring` whose keys never leave a PKCS#11 token."""

    def __init__(self, objects: TokenObjects, record: dict[str, Any]) -> None:
        if record.get("format") != RECORD_FORMAT:
            raise ConfigurationError(
                f"token {objects.token_label!r}: unsupported keyring format under "
                f"{objects.prefix!r}"
            )
        self._objects = objects
        self._suite = Suite(record["suite"])
        self._bik_id = str(record["blind_index"]["id"])
        self._bik_algorithm = str(record["blind_index"]["algorithm"])
        if self._bik_algorithm != "hmac-sha256":
            objects.check_mechanisms(self._suite)
        self._keks: dict[str, _Kek] = {}
        self._keks_loaded_at = 0.0
        self._hmac_keys: dict[str, KeyHandle] = {}
        self._signing: dict[str, tuple[KeyHandle, bytes]] = {}
        self._lock = threading.RLock()
        self._load_keks()
        if not self._keks:
            raise ConfigurationError(
                f"token {objects.token_label!r}: no key-encryption key under {objects.prefix!r}"
            )

    def _reconnect(self) -> None:
        """Log in again and forget every key handle: they belonged to the lost session."""
        with self._lock:
            self._objects.reconnect()
            for kek in self._keks.values():
                kek.key = None
            self._hmac_keys.clear()
            self._signing.clear()

    # -- opening and creating -------------------------------------------------------------

    @classmethod
    def open(cls, settings: VaultSettings) -> Pkcs11Keyring:
        objects = TokenObjects(Pkcs11Config.from_settings(settings))
        record = objects.data(objects.label("keyring"))
        if record is None:
            detail = (
                "it holds keys from an unfinished init or migration"
                if objects.labels()
                else "run `resident-vault init` with VAULT_KEYRING=pkcs11, or "
                "`resident-vault keys migrate --to pkcs11`"
            )
            raise ConfigurationError(
                f"PKCS#11 token {objects.token_label!r} has no keyring under prefix "
                f"{objects.prefix!r}; {detail}"
            )
        return cls(objects, record)

    @classmethod
    def exists(cls, settings: VaultSettings) -> bool:
        """Whether the token holds a finished keyring under the configured prefix."""
        objects = TokenObjects(Pkcs11Config.from_settings(settings))
        return objects.data(objects.label("keyring")) is not None

    @classmethod
    def create(cls, settings: VaultSettings, suite: Suite = Suite.AES_256_GCM) -> Pkcs11Keyring:
        """Generate every key in the token; refuses if the prefix holds anything already."""
        objects = TokenObjects(Pkcs11Config.from_settings(settings))
        objects.check_mechanisms(suite)
        with objects.session():
            if objects.labels():
                raise ConfigurationError(
                    f"PKCS#11 token {objects.token_label!r} already holds objects under "
                    f"prefix {objects.prefix!r}; refusing to overwrite keys (choose another "
                    "VAULT_PKCS11_KEY_PREFIX)"
                )
            kek_id = new_kek_id(1)
            objects.create_aes_key(objects.label("kek", kek_id))
            objects.write_data(objects.label("kek", kek_id), kek_record(kek_id, 1, _now()))
            bik_id = f"bik-{secrets.token_hex(4)}"
            objects.create_hmac_key(objects.label("bik", bik_id))
            objects.create_hmac_key(objects.label("pseudonym-prk"))
            record = keyring_record(suite, bik_id, source="generated")
            objects.write_data(objects.label("keyring"), record)
        log.info("keyring.pkcs11_created", token=objects.token_label, prefix=objects.prefix)
        return cls(objects, record)

    # -- KEKs -------------------------------------------------------------------------------

    def _load_keks(self) -> None:
        with self._lock:
            loaded = {}
            for raw in self._objects.data_under("kek"):
                kek_id = str(raw["id"])
                known = self._keks.get(kek_id)
                loaded[kek_id] = known or _Kek(
                    kek_id, int(raw["sequence"]), datetime.fromisoformat(raw["created_at"])
                )
            self._keks = loaded
            self._keks_loaded_at = time.monotonic()

    def _fresh_keks(self) -> dict[str, _Kek]:
        if time.monotonic() - self._keks_loaded_at > _KEK_REFRESH_SECONDS:
            self._load_keks()
        return self._keks

    def _active(self) -> _Kek:
        keks = self._fresh_keks()
        if not keks:
            raise KeyNotFound("no key-encryption key in the token")
        return max(keks.values(), key=lambda k: (k.sequence, k.created_at))

    def _kek_key(self, kek: _Kek) -> KeyHandle:
        if kek.key is None:
            found = self._objects.find(
                ObjectClass.SECRET_KEY, self._objects.label("kek", kek.kek_id)
            )
            if not isinstance(found, pkcs11.SecretKey):
                raise KeyNotFound(f"key-encryption key {kek.kek_id} is not in the token")
            kek.key = found
        return kek.key

    def _kek(self, kek_id: str) -> _Kek:
        kek = self._fresh_keks().get(kek_id)
        if kek is None:  # made by another process since we looked
            self._load_keks()
            kek = self._keks.get(kek_id)
        if kek is None:
            raise KeyNotFound(f"key-encryption key {kek_id} is not in this keyring")
        return kek

    @property
    def suite(self) -> Suite:
        return self._suite

    @property
    def blind_index_scheme(self) -> str:
        return f"{self._bik_algorithm}:{self._bik_id}"

    @property
    def token_label(self) -> str:
        return self._objects.token_label

    @property
    def prefix(self) -> str:
        return self._objects.prefix

    def active_kek_id(self) -> str:
        return self._active().kek_id

    @_reconnecting
    def keks(self) -> list[KekInfo]:
        self._load_keks()
        active = self._active().kek_id
        return [
            KekInfo(k.kek_id, Suite.AES_256_GCM, k.created_at, k.kek_id == active)
            for k in sorted(self._keks.values(), key=lambda k: (k.sequence, k.created_at))
        ]

    @_reconnecting
    def wrap(self, data_key: bytes, context: bytes) -> tuple[str, bytes]:
        kek = self._active()
        nonce = os.urandom(_WRAP_NONCE)
        params = GCMParams(nonce, context)
        try:
            sealed = self._objects.call(
                lambda _s: self._kek_key(kek).encrypt(
                    data_key, mechanism=Mechanism.AES_GCM, mechanism_param=params
                )
            )
        except p11.ObjectHandleInvalid:  # destroyed by another process: look again
            self._load_keks()
            return self.wrap(data_key, context)
        return kek.kek_id, nonce + bytes(sealed)

    @_reconnecting
    def unwrap(self, kek_id: str, wrapped: bytes, context: bytes) -> bytes:
        kek = self._kek(kek_id)
        if len(wrapped) <= _WRAP_NONCE:
            raise DecryptionFailed("wrapped key too short")
        params = GCMParams(wrapped[:_WRAP_NONCE], context)
        try:
            return bytes(
                self._objects.call(
                    lambda _s: self._kek_key(kek).decrypt(
                        wrapped[_WRAP_NONCE:], mechanism=Mechanism.AES_GCM, mechanism_param=params
                    )
                )
            )
        except p11.ObjectHandleInvalid:
            self._load_keks()
            raise KeyNotFound(f"key-encryption key {kek_id} is not in the token") from None
        except _OPEN_FAILURES as exc:
            raise DecryptionFailed("wrapped key failed authentication") from exc

    def rotate_kek(self) -> str:
        with self._lock, self._objects.session():
            self._load_keks()
            sequence = max((k.sequence for k in self._keks.values()), default=0) + 1
            kek_id = new_kek_id(sequence)
            label = self._objects.label("kek", kek_id)
            # The key first, its record second: a crash between leaves an unused key, never
            # a record whose key is missing.
            self._objects.create_aes_key(label)
            self._objects.write_data(label, kek_record(kek_id, sequence, _now()))
            self._load_keks()
        log.info("keyring.kek_created", kek_id=kek_id, token=self.token_label)
        return kek_id

    def destroy_kek(self, kek_id: str) -> None:
        with self._lock, self._objects.session():
            self._load_keks()
            if kek_id not in self._keks:
                raise KeyNotFound(f"key-encryption key {kek_id} is not in this keyring")
            if kek_id == self._active().kek_id:
                raise ConfigurationError("the active key-encryption key cannot be destroyed")
            label = self._objects.label("kek", kek_id)
            # The key first: a crash between leaves a record whose key is gone, which the
            # next destroy removes; never key material without its record.
            self._objects.destroy(ObjectClass.SECRET_KEY, label)
            self._objects.destroy(ObjectClass.DATA, label)
            self._load_keks()
        log.info("keyring.kek_destroyed", kek_id=kek_id, token=self.token_label)

    # -- MACs -------------------------------------------------------------------------------

    def _hmac_key(self, label: str) -> KeyHandle:
        key = self._hmac_keys.get(label)
        if key is None:
            found = self._objects.find(ObjectClass.SECRET_KEY, label)
            if not isinstance(found, pkcs11.SecretKey):
                raise ConfigurationError(
                    f"token {self.token_label!r}: {label!r} is missing; the keyring is incomplete"
                )
            key = self._hmac_keys[label] = found
        return key

    def _hmac(self, label: str, message: bytes) -> bytes:
        return bytes(
            self._objects.call(
                lambda _s: self._hmac_key(label).sign(message, mechanism=Mechanism.SHA256_HMAC)
            )
        )

    @_reconnecting
    def blind_index(self, message: bytes) -> bytes:
        return self._hmac(self._objects.label("bik", self._bik_id), message)

    @_reconnecting
    def pseudonym_key(self, recipient: str) -> bytes:
        # HKDF-Expand (RFC 5869) of the PRK kept in the token: the same 64 bytes the local
        # keyring derives with full HKDF from its master key, so migrated vaults agree.
        info = _PSEUDONYM_INFO + recipient.encode()
        label = self._objects.label("pseudonym-prk")
        first = self._hmac(label, info + b"\x01")
        second = self._hmac(label, first + info + b"\x02")
        return first + second

    # -- signing ----------------------------------------------------------------------------

    def _signing_key(self, name: str) -> tuple[KeyHandle, bytes]:
        with self._lock:
            known = self._signing.get(name)
            if known is not None:
                return known
            label = self._objects.label("sign", name)
            with self._objects.session():
                private = self._objects.find(ObjectClass.PRIVATE_KEY, label)
                public = self._objects.find(ObjectClass.PUBLIC_KEY, label)
                if private is None and public is None:
                    self._objects.create_signing_key(name)
                    log.info("keyring.signing_key_created", name=name, token=self.token_label)
                    private = self._objects.find(ObjectClass.PRIVATE_KEY, label)
                    public = self._objects.find(ObjectClass.PUBLIC_KEY, label)
                if not isinstance(private, pkcs11.PrivateKey) or public is None:
                    raise ConfigurationError(
                        f"token {self.token_label!r}: signing key {label!r} is half present"
                    )
                raw = _ed25519_public_from_point(bytes(public[Attribute.EC_POINT]))
            self._signing[name] = (private, raw)
            return private, raw

    @_reconnecting
    def signing_public_key(self, name: str) -> bytes:
        return self._signing_key(name)[1]

    @_reconnecting
    def sign(self, name: str, message: bytes) -> bytes:
        private, _public = self._signing_key(name)
        return bytes(
            self._objects.call(lambda _s: private.sign(message, mechanism=Mechanism.EDDSA))
        )

    @_reconnecting
    def signing_key_names(self) -> list[str]:
        start = self._objects.label("sign") + "/"
        return sorted(
            label[len(start) :]
            for cls, label in self._objects.labels()
            if cls is ObjectClass.PRIVATE_KEY and label.startswith(start)
        )


# -- records -----------------------------------------------------------------------------


def new_kek_id(sequence: int) -> str:
    return f"kek-{sequence:04d}-{secrets.token_hex(3)}"


def kek_record(kek_id: str, sequence: int, created_at: str) -> dict[str, Any]:
    return {"id": kek_id, "sequence": sequence, "created_at": created_at}


def keyring_record(suite: Suite, bik_id: str, *, source: str) -> dict[str, Any]:
    return {
        "format": RECORD_FORMAT,
        "suite": suite.value,
        "created_at": _now(),
        "blind_index": {"id": bik_id, "algorithm": suite.hmac_algorithm},
        "source": source,
    }
