"""Opening a vault: settings -> engine, sessions, keyring and the resident store.

`init_vault` makes a new data directory (keys first, then the schema); `open_vault`
refuses to run without the keyring, since a vault without its keys serves nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from vault.catalogue import default_catalogue
from vault.config import VaultSettings
from vault.db import (
    engines_for,
    read_session_factory,
    require_runnable_schema,
    session_factory,
)
from vault.errors import ConfigurationError
from vault.interfaces import Keyring
from vault.keyring import LocalKeyring
from vault.keys import DataKeyCache
from vault.masking import check_catalogue as check_masks
from vault.record_move import upgrade_moving_records
from vault.services import ResidentStore
from vault.stamps import Stamps
from vault.validators import check_catalogue as check_validators


@dataclass
class Vault:
    settings: VaultSettings
    engine: Engine
    sessions: sessionmaker[Session]
    keyring: Keyring
    store: ResidentStore
    # Lists, exports and statistics read residents' rows here: the replica when one is
    # configured (data keys still from the primary), else the primary itself.
    read_engine: Engine = None  # type: ignore[assignment] # filled in by __post_init__
    read_sessions: sessionmaker[Session] = None  # type: ignore[assignment]
    # What the hot path's caches follow (always the primary: a revocation must not wait
    # for replication).
    stamps: Stamps = None  # type: ignore[assignment] # filled in by __post_init__

    def __post_init__(self) -> None:
        if self.stamps is None:
            self.stamps = Stamps(self.engine)
        if self.read_engine is None:
            self.read_engine = self.engine
        if self.read_sessions is None:
            self.read_sessions = read_session_factory(self.read_engine, self.engine)

    def close(self) -> None:
        self.store.data_keys.cache.clear()
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()


def _keyring(settings: VaultSettings) -> Keyring:
    if settings.keyring == "local":
        return LocalKeyring.load(settings.keyring_path)
    if settings.keyring == "pkcs11":
        # Imported here so a vault on the local keyring never loads a PKCS#11 module.
        from vault.pkcs11_keyring import Pkcs11Keyring  # noqa: PLC0415

        return Pkcs11Keyring.open(settings)
    raise ConfigurationError(f"unknown keyring {settings.keyring!r} (supported: local, pkcs11)")


def keyring_exists(settings: VaultSettings) -> bool:
    """Whether this vault has been initialised: its key file, or its keyring in the token."""
    if settings.keyring == "pkcs11":
        from vault.pkcs11_keyring import Pkcs11Keyring  # noqa: PLC0415

        return Pkcs11Keyring.exists(settings)
    return settings.keyring_path.exists()


def open_vault(settings: VaultSettings, *, upgrade_schema: bool = True) -> Vault:
    catalogue = default_catalogue()
    # A validator or mask the catalogue names but the code lacks fails here, at start-up,
    # not on the first request that touches that field.
    check_validators(catalogue)
    check_masks(catalogue)
    keyring = _keyring(settings)
    engine, read_engine = engines_for(settings)
    cache = DataKeyCache(settings.data_key_cache_size, settings.data_key_cache_seconds)
    store = ResidentStore(keyring, catalogue, key_cache=cache)
    try:
        if upgrade_schema and settings.migrate_on_start:
            # With the keyring at hand, an older vault's per-field rows move between the
            # expand and the contract (vault.record_move); a new one just migrates.
            upgrade_moving_records(engine, store)
        elif upgrade_schema:
            require_runnable_schema(engine)
    except BaseException:
        # A refused start leaves no pooled connections behind.
        engine.dispose()
        read_engine.dispose()
        raise
    return Vault(
        settings,
        engine,
        session_factory(engine),
        keyring,
        store,
        read_engine,
        read_session_factory(read_engine, engine),
    )


def init_vault(settings: VaultSettings) -> Vault:
    """Create the data directory (mode 0700) and keyring, then migrate the database.

    With VAULT_KEYRING=pkcs11 the keys are generated in the token (never overwriting a
    keyring already under the prefix) and the data directory holds no key file.
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.home, 0o700)
    if settings.keyring == "local":
        LocalKeyring.create(settings.keyring_path, settings.crypto_suite)
    elif settings.keyring == "pkcs11":
        from vault.pkcs11_keyring import Pkcs11Keyring  # noqa: PLC0415

        Pkcs11Keyring.create(settings, settings.crypto_suite)
    return open_vault(settings)
