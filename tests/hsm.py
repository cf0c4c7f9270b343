"""SoftHSM2 for tests: one token per pytest-xdist worker, a fresh label prefix per test.

SoftHSM reads SOFTHSM2_CONF when the PKCS#11 library initialises, once per process, so the
worker's configuration and token directory are set up before anything loads the module.
Subprocesses (the CLI, demo servers) inherit SOFTHSM2_CONF and so see the same token.
Under CI=true a missing SoftHSM2 fails the tests that need it; elsewhere they skip.

For the lead's wiring: `hsm_settings(prefix)` gives Settings overrides, `hsm_env(prefix)`
the same as VAULT_* environment variables for a subprocess, and `destroy_prefix(prefix)`
removes a test's objects from the token afterwards.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pkcs11 import Attribute
from pydantic import SecretStr

from api.settings import Settings
from vault.pkcs11_keyring import Pkcs11Config, TokenObjects

SOFTHSM_MODULE = Path(os.environ.get("VAULT_TEST_PKCS11_MODULE", "/usr/lib/softhsm/libsofthsm2.so"))
IN_CI = os.environ.get("CI", "").lower() == "true"


@dataclass(frozen=True)
class SoftHsmToken:
    module: Path
    label: str
    pin: str
    conf: Path


_token: SoftHsmToken | None = None


def softhsm_available() -> bool:
    return SOFTHSM_MODULE.is_file() and shutil.which("softhsm2-util") is not None


def require_softhsm() -> None:
    if not softhsm_available():
        message = f"SoftHSM2 not installed (softhsm2-util, {SOFTHSM_MODULE})"
        if IN_CI:
            pytest.fail(f"CI=true but {message}: PKCS#11 tests cannot be skipped")
        pytest.skip(message)


def softhsm_token() -> SoftHsmToken:
    """This process's token, made on first use (skips or fails if SoftHSM2 is missing)."""
    global _token  # noqa: PLW0603 - one token per process, like the library's own state
    if _token is not None:
        return _token
    require_softhsm()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    directory = Path(tempfile.mkdtemp(prefix=f"rv-softhsm-{worker}-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    (directory / "tokens").mkdir()
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {directory / 'tokens'}\n"
        "objectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
        encoding="utf-8",
    )
    os.environ["SOFTHSM2_CONF"] = str(conf)
    token = SoftHsmToken(SOFTHSM_MODULE, f"rv-test-{worker}", secrets.token_hex(8), conf)
    subprocess.run(
        [  # noqa: S607
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            token.label,
            "--so-pin",
            secrets.token_hex(8),
            "--pin",
            token.pin,
        ],
        check=True,
        capture_output=True,
        env=os.environ,
        timeout=60,
    )
    _token = token
    return token


def new_prefix() -> str:
    return f"t{secrets.token_hex(5)}"


def hsm_settings(prefix: str | None = None) -> dict[str, Any]:
    """Settings overrides for the pkcs11 keyring on this worker's token."""
    token = softhsm_token()
    return {
        "keyring": "pkcs11",
        "pkcs11_module": token.module,
        "pkcs11_token_label": token.label,
        "pkcs11_pin": SecretStr(token.pin),
        "pkcs11_key_prefix": prefix or new_prefix(),
    }


def hsm_env(prefix: str) -> dict[str, str]:
    """The same as environment variables, for a subprocess (SOFTHSM2_CONF included)."""
    token = softhsm_token()
    return {
        "SOFTHSM2_CONF": str(token.conf),
        "VAULT_KEYRING": "pkcs11",
        "VAULT_PKCS11_MODULE": str(token.module),
        "VAULT_PKCS11_TOKEN_LABEL": token.label,
        "VAULT_PKCS11_PIN": token.pin,
        "VAULT_PKCS11_KEY_PREFIX": prefix,
    }


def destroy_prefix(prefix: str) -> None:
    """Remove every object under the prefix, so a worker's token stays small."""
    objects = TokenObjects(Pkcs11Config.from_settings(Settings(**hsm_settings(prefix))))
    start = prefix + "/"
    with objects.session() as session:
        doomed = [o for o in session.get_objects() if str(o[Attribute.LABEL]).startswith(start)]
        for obj in doomed:
            obj.destroy()


@pytest.fixture(scope="session")
def softhsm() -> SoftHsmToken:
    return softhsm_token()


@pytest.fixture
def hsm_prefix(softhsm: SoftHsmToken) -> Iterator[str]:
    prefix = new_prefix()
    yield prefix
    destroy_prefix(prefix)
