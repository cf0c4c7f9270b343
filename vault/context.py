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
from vault.db import make_engine, migrate, session_factory
from vault.errors import ConfigurationError
from vault.interfaces import Keyring
from vault.keyring import LocalKeyring
from vault.keys import DataKeyCache
from vault.masking import check_catalogue as check_masks
from vault.services import ResidentStore
from vault.validators import check_catalogue as check_validators


@dataclass
class Vault:
    settings: VaultSettings
    engine: Engine
    sessions: sessionmaker[Session]
    keyring: Keyring
    store: ResidentStore

    def close(self) -> None:
        self.store.data_keys.cache.clear()
        self.engine.dispose()


def _keyring(settings: VaultSettings) -> Keyring:
    if settings.keyring != "local":
        raise ConfigurationError(f"unknown keyring {settings.keyring!r} (supported: local)")
    return LocalKeyring.load(settings.keyring_path)


def open_vault(settings: VaultSettings, *, upgrade_schema: bool = True) -> Vault:
    catalogue = default_catalogue()
    # A validator or mask the catalogue names but the code lacks fails here, at start-up,
    # not on the first request that touches that field.
    check_validators(catalogue)
    check_masks(catalogue)
    keyring = _keyring(settings)
    engine = make_engine(settings.resolved_database_url)
    if upgrade_schema:
        migrate(engine)
    cache = DataKeyCache(settings.data_key_cache_size, settings.data_key_cache_seconds)
    return Vault(
        settings,
        engine,
        session_factory(engine),
        keyring,
        ResidentStore(keyring, catalogue, key_cache=cache),
    )


def init_vault(settings: VaultSettings) -> Vault:
    """Create the data directory (mode 0700) and keyring, then migrate the database."""
    settings.home.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.home, 0o700)
    if settings.keyring == "local":
        LocalKeyring.create(settings.keyring_path, settings.crypto_suite)
    return open_vault(settings)
