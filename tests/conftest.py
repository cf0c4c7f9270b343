"""Shared fixtures: a fresh vault per test on SQLite and, when configured, PostgreSQL.

The schema is always built by the real migrations. PostgreSQL runs when
VAULT_TEST_DATABASE_URL points at a server (`.ci/run` starts one); under CI=true a
missing server fails the run instead of skipping those tests.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from api.settings import Settings
from tests.hsm import (  # softhsm, hsm_prefix: fixtures for every module
    destroy_prefix,
    hsm_prefix,  # noqa: F401
    hsm_settings,
    new_prefix,
    require_softhsm,
    softhsm,  # noqa: F401
    softhsm_available,
)
from vault.context import Vault, init_vault
from vault.crypto import Suite
from vault.db import make_engine, migrate

PG_ENV = "VAULT_TEST_DATABASE_URL"
IN_CI = os.environ.get("CI", "").lower() == "true"


def _require_postgres() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        if IN_CI:
            pytest.fail(f"CI=true but {PG_ENV} is not set: PostgreSQL tests cannot be skipped")
        pytest.skip(f"PostgreSQL not configured ({PG_ENV})")
    return url


@pytest.fixture(scope="session")
def postgres_template(worker_id: str) -> Iterator[str | None]:
    """A migrated template database per xdist worker; each test copies it (fast)."""
    url = os.environ.get(PG_ENV)
    if not url:
        yield None
        return
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    name = f"rv_tmpl_{worker_id}_{secrets.token_hex(3)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    template_url = make_url(url).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(template_url)
    migrate(engine)
    engine.dispose()
    yield template_url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_template: str | None
) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'vault.db'}"
        return
    url = _require_postgres()
    assert postgres_template is not None
    template = make_url(postgres_template).database
    name = f"rv_t_{secrets.token_hex(6)}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    yield make_url(url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def make_vault(
    home: Path,
    database_url: str,
    suite: Suite = Suite.AES_256_GCM,
    *,
    keyring: str = "local",
    pkcs11_prefix: str | None = None,
) -> Vault:
    """A new vault; keyring="pkcs11" puts its keys in this worker's SoftHSM2 token."""
    overrides = hsm_settings(pkcs11_prefix) if keyring == "pkcs11" else {}
    settings = Settings(home=home, database_url=database_url, crypto_suite=suite, **overrides)
    return init_vault(settings)


def suite_keyring(database_url: str) -> str:
    """The PostgreSQL half of the suite runs on SoftHSM2 (the production pairing); SQLite on
    the local keyring. Outside CI a machine without SoftHSM2 keeps PostgreSQL on the local one."""
    if not database_url.startswith("postgresql"):
        return "local"
    if not softhsm_available():
        require_softhsm()  # fails under CI=true
    return "pkcs11" if softhsm_available() else "local"


@pytest.fixture
def vault(tmp_path: Path, database_url: str) -> Iterator[Vault]:
    kind = suite_keyring(database_url)
    prefix = new_prefix() if kind == "pkcs11" else None
    opened = make_vault(tmp_path / "home", database_url, keyring=kind, pkcs11_prefix=prefix)
    yield opened
    opened.close()
    if prefix is not None:
        destroy_prefix(prefix)


@pytest.fixture(scope="session")
def worker_id() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")
