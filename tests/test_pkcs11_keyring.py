"""The PKCS#11 keyring on SoftHSM2: the Keyring contract (same tests as the local keyring),
keys that never leave the token, clear errors, and a migration that loses nothing."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pkcs11 import Attribute, ObjectClass
from pkcs11 import exceptions as p11
from pydantic import SecretStr
from sqlalchemy import select

import audit.models  # noqa: F401 - the audit tables for the snapshot's checks
from access.runtime import open_runtime
from api.settings import Settings
from audit.models import AuditEntry
from audit.verify import verify_log
from tests.hsm import SoftHsmToken, destroy_prefix, hsm_env, hsm_settings, new_prefix
from vault.context import Vault, keyring_exists
from vault.crypto import Suite
from vault.errors import ConfigurationError, DecryptionFailed, KeyNotFound
from vault.interfaces import Keyring
from vault.keyring import LocalKeyring
from vault.keyring_migration import read_local
from vault.models import Resident
from vault.pkcs11_keyring import Pkcs11Config, Pkcs11Keyring, TokenObjects
from vault.pseudonyms import Pseudonyms

# -- the Keyring contract, run against both implementations --------------------------------


@pytest.fixture(params=["local", "pkcs11"])
def keyring(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Keyring]:
    if request.param == "local":
        yield LocalKeyring.create(tmp_path / "keyring.json")
        return
    request.getfixturevalue("softhsm")
    prefix = new_prefix()
    yield Pkcs11Keyring.create(Settings(**hsm_settings(prefix)))
    destroy_prefix(prefix)


def _reopen(keyring: Keyring, tmp_path: Path) -> Keyring:
    """The same keyring as a restarted process would load it."""
    if isinstance(keyring, LocalKeyring):
        return LocalKeyring.load(tmp_path / "keyring.json")
    assert isinstance(keyring, Pkcs11Keyring)
    return Pkcs11Keyring.open(Settings(**hsm_settings(keyring.prefix)))


_examples = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_examples
@given(data_key=st.binary(min_size=16, max_size=64), context=st.binary(max_size=80))
def test_wrapped_data_keys_open_only_in_their_context(
    keyring: Keyring, data_key: bytes, context: bytes
) -> None:
    kek_id, wrapped = keyring.wrap(data_key, context)
    assert kek_id == keyring.active_kek_id()
    assert data_key not in wrapped
    assert keyring.unwrap(kek_id, wrapped, context) == data_key
    with pytest.raises(DecryptionFailed):
        keyring.unwrap(kek_id, wrapped, context + b"x")


@_examples
@given(position=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_a_tampered_wrapped_key_never_opens(keyring: Keyring, position: int, flip: int) -> None:
    kek_id, wrapped = keyring.wrap(b"k" * 32, b"ctx")
    tampered = bytearray(wrapped)
    tampered[position % len(wrapped)] ^= flip
    with pytest.raises(DecryptionFailed):
        keyring.unwrap(kek_id, bytes(tampered), b"ctx")
    with pytest.raises(DecryptionFailed):
        keyring.unwrap(kek_id, wrapped[:12], b"ctx")


def test_an_unknown_kek_is_key_not_found(keyring: Keyring) -> None:
    _kek_id, wrapped = keyring.wrap(b"k" * 32, b"ctx")
    with pytest.raises(KeyNotFound):
        keyring.unwrap("kek-9999-000000", wrapped, b"ctx")


def test_rotation_keeps_old_keks_until_destroyed(keyring: Keyring, tmp_path: Path) -> None:
    old_id, wrapped = keyring.wrap(b"x" * 32, b"c")
    new_id = keyring.rotate_kek()
    assert keyring.active_kek_id() == new_id != old_id
    assert [k.kek_id for k in keyring.keks() if k.active] == [new_id]
    reopened = _reopen(keyring, tmp_path)
    assert reopened.active_kek_id() == new_id
    assert reopened.unwrap(old_id, wrapped, b"c") == b"x" * 32
    assert reopened.wrap(b"y" * 32, b"c")[0] == new_id
    with pytest.raises(ConfigurationError):
        keyring.destroy_kek(new_id)
    keyring.destroy_kek(old_id)
    with pytest.raises(KeyNotFound):
        keyring.destroy_kek(old_id)
    with pytest.raises(KeyNotFound):
        _reopen(keyring, tmp_path).unwrap(old_id, wrapped, b"c")
    assert [k.kek_id for k in keyring.keks()] == [new_id]


def test_blind_index_pseudonym_and_signing_keys_are_stable(
    keyring: Keyring, tmp_path: Path
) -> None:
    index = keyring.blind_index(b"13812345678")
    assert len(index) == 32 and index != keyring.blind_index(b"13812345679")
    pseudonym_key = keyring.pseudonym_key("org:property-xingfu")
    assert len(pseudonym_key) == 64 and pseudonym_key != keyring.pseudonym_key("org:other")
    public = keyring.signing_public_key("audit-log")  # made on first use
    assert len(public) == 32 and keyring.signing_public_key("consent") != public
    signature = keyring.sign("audit-log", b"checkpoint")
    Ed25519PublicKey.from_public_bytes(public).verify(signature, b"checkpoint")
    reopened = _reopen(keyring, tmp_path)
    assert reopened.blind_index(b"13812345678") == index
    assert reopened.pseudonym_key("org:property-xingfu") == pseudonym_key
    assert reopened.signing_public_key("audit-log") == public
    assert reopened.blind_index_scheme == keyring.blind_index_scheme


def test_the_keyring_is_safe_from_the_api_thread_pool(keyring: Keyring) -> None:
    def work(n: int) -> bool:
        key = n.to_bytes(4, "big") * 8
        kek_id, wrapped = keyring.wrap(key, b"resident-%d" % n)
        signature = keyring.sign("audit-log", key)
        Ed25519PublicKey.from_public_bytes(keyring.signing_public_key("audit-log")).verify(
            signature, key
        )
        return (
            keyring.unwrap(kek_id, wrapped, b"resident-%d" % n) == key
            and len(keyring.blind_index(key)) == 32
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(work, range(400)))


# -- only the token ------------------------------------------------------------------------


def _objects(prefix: str) -> TokenObjects:
    return TokenObjects(Pkcs11Config.from_settings(Settings(**hsm_settings(prefix))))


def test_no_key_can_be_read_out_of_the_token(hsm_prefix: str) -> None:
    keyring = Pkcs11Keyring.create(Settings(**hsm_settings(hsm_prefix)))
    keyring.signing_public_key("audit-log")
    keyring.rotate_kek()
    objects = _objects(hsm_prefix)
    secret = [
        label
        for cls, label in objects.labels()
        if cls in {ObjectClass.SECRET_KEY, ObjectClass.PRIVATE_KEY}
    ]
    assert len(secret) == 5  # two KEKs, the blind-index key, the pseudonym PRK, a signing key
    for label in secret:
        key = objects.find(ObjectClass.SECRET_KEY, label) or objects.find(
            ObjectClass.PRIVATE_KEY, label
        )
        assert key is not None
        with objects.session(), pytest.raises(p11.AttributeSensitive):
            key[Attribute.VALUE]
        with objects.session():
            assert key[Attribute.SENSITIVE] and not key[Attribute.EXTRACTABLE]
            assert key[Attribute.NEVER_EXTRACTABLE] and key[Attribute.LOCAL]  # made inside


def test_vaults_share_a_token_by_prefix(softhsm: SoftHsmToken) -> None:
    one_prefix, two_prefix = new_prefix(), new_prefix()
    one = Pkcs11Keyring.create(Settings(**hsm_settings(one_prefix)))
    two = Pkcs11Keyring.create(Settings(**hsm_settings(two_prefix)))
    try:
        kek_id, wrapped = one.wrap(b"k" * 32, b"ctx")
        with pytest.raises(KeyNotFound):
            two.unwrap(kek_id, wrapped, b"ctx")
        assert one.blind_index(b"x") != two.blind_index(b"x")
        with pytest.raises(ConfigurationError, match="already holds objects"):
            Pkcs11Keyring.create(Settings(**hsm_settings(one_prefix)))
    finally:
        destroy_prefix(one_prefix)
        destroy_prefix(two_prefix)


def test_an_ambiguous_label_is_refused_not_guessed(hsm_prefix: str) -> None:
    Pkcs11Keyring.create(Settings(**hsm_settings(hsm_prefix)))
    objects = _objects(hsm_prefix)
    with objects.session() as session:  # a second record, as a careless tool might write
        session.create_object(
            {
                Attribute.CLASS: ObjectClass.DATA,
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.LABEL: f"{hsm_prefix}/keyring",
                Attribute.VALUE: b"{}",
            }
        )
    with pytest.raises(ConfigurationError, match="2 objects labelled"):
        Pkcs11Keyring.open(Settings(**hsm_settings(hsm_prefix)))


def test_the_national_suite_needs_a_module_with_hmac_sm3(hsm_prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="hmac-sm3"):
        Pkcs11Keyring.create(Settings(**hsm_settings(hsm_prefix)), Suite.SM4_GCM)
    assert _objects(hsm_prefix).labels() == []  # nothing half-made


def test_configuration_mistakes_are_clear(hsm_prefix: str, tmp_path: Path) -> None:
    base = Settings(**hsm_settings(hsm_prefix))
    Pkcs11Keyring.create(base)
    wrong_pin = base.model_copy(update={"pkcs11_pin": SecretStr("000000-wrong")})
    with pytest.raises(ConfigurationError, match="PIN is incorrect") as caught:
        Pkcs11Keyring.open(wrong_pin)
    assert "000000-wrong" not in str(caught.value)
    with pytest.raises(ConfigurationError, match="no PKCS#11 token labelled 'absent'"):
        Pkcs11Keyring.open(base.model_copy(update={"pkcs11_token_label": "absent"}))
    with pytest.raises(ConfigurationError, match=r"module .* not found"):
        Pkcs11Keyring.open(base.model_copy(update={"pkcs11_module": tmp_path / "none.so"}))
    with pytest.raises(ConfigurationError, match="no keyring under prefix"):
        Pkcs11Keyring.open(base.model_copy(update={"pkcs11_key_prefix": new_prefix()}))


def test_the_postgresql_half_of_the_suite_runs_on_softhsm(vault: Vault) -> None:
    expected = Pkcs11Keyring if vault.engine.dialect.name == "postgresql" else LocalKeyring
    assert isinstance(vault.keyring, expected)


# -- the command line ----------------------------------------------------------------------


def _run(
    home: Path, database_url: str, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "VAULT_HOME": str(home),
        "VAULT_DATABASE_URL": database_url,
        "VAULT_LANG": "en",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-c", "from api.cli.main import main; main()", "--log-console", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )


def _error(result: subprocess.CompletedProcess[str]) -> str:
    """The command's error: exactly one line (structured log lines aside)."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("resident-vault:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_a_wrong_pin_is_one_line_without_the_pin(tmp_path: Path, hsm_prefix: str) -> None:
    url = f"sqlite:///{tmp_path / 'vault.db'}"
    env = hsm_env(hsm_prefix)
    made = _run(tmp_path / "home", url, env, "init")
    assert made.returncode == 0, made.stderr
    assert not (tmp_path / "home" / "keyring.json").exists()  # the keys are in the token
    listed = _run(tmp_path / "home", url, env, "keys", "list")
    assert listed.returncode == 0 and "(active)" in listed.stdout
    again = _run(tmp_path / "home", url, env, "init")
    # initialised, though no keyring.json says so: nothing is regenerated in the token
    assert again.returncode == 1 and "already initialised" in _error(again)
    wrong = _run(tmp_path / "home", url, {**env, "VAULT_PKCS11_PIN": "31415926"}, "keys", "list")
    assert wrong.returncode == 1 and "PIN is incorrect" in _error(wrong)
    assert "31415926" not in wrong.stderr + wrong.stdout


# -- migration -----------------------------------------------------------------------------


def _local(home: Path, database_url: str) -> Settings:
    return Settings(home=home, database_url=database_url)


def _snapshot(settings: Settings) -> dict[str, Any]:
    """What a user would notice: fields, lookups, pseudonyms, the audit log's key and proof."""
    runtime = open_runtime(settings)
    try:
        vault = runtime.vault
        with vault.sessions() as session:
            ids = list(session.scalars(select(Resident.id).where(Resident.status == "active")))
            records = vault.store.read_many(session, ids)
            phones = sorted({r["phone"] for r in records.values() if r.get("phone")})[:15]
            lookups = {phone: vault.store.find(session, "phone", phone) for phone in phones}
            report = verify_log(session, runtime.audit.verifier_key)
            actions = list(session.scalars(select(AuditEntry.action)))
        pseudonyms = Pseudonyms(vault.keyring)
        return {
            "records": records,
            "lookups": lookups,
            "pseudonyms": [pseudonyms.of("org:property-xingfu", rid) for rid in ids[:20]],
            "verifier_key": runtime.audit.verifier_key,
            "checkpoints": report.checkpoints,
            "actions": actions,
        }
    finally:
        runtime.close()


@pytest.fixture
def demo_vault(tmp_path: Path, database_url: str) -> Path:
    home = tmp_path / "home"
    made = _run(home, database_url, {}, "init", "--demo", "--residents", "40")
    assert made.returncode == 0, made.stderr
    rotated = _run(home, database_url, {}, "keys", "rotate")  # two KEKs, both in use by then
    assert rotated.returncode == 0, rotated.stderr
    assert _run(home, database_url, {}, "audit", "checkpoint").returncode == 0
    return home


def test_a_populated_vault_migrates_to_the_hsm_and_loses_nothing(
    demo_vault: Path, database_url: str, hsm_prefix: str
) -> None:
    home = demo_vault
    before = _snapshot(_local(home, database_url))
    assert before["checkpoints"] >= 2 and len(before["records"]) >= 40
    env = {**hsm_env(hsm_prefix), "VAULT_KEYRING": "local"}
    migrated = _run(home, database_url, env, "keys", "migrate", "--to", "pkcs11")
    assert migrated.returncode == 0, migrated.stderr
    for line in ("VAULT_KEYRING=pkcs11", f"VAULT_PKCS11_KEY_PREFIX={hsm_prefix}"):
        assert line in migrated.stdout
    assert not (home / "keyring.json").exists()
    kept = home / "keyring.json.migrated"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600

    hsm = Settings(home=home, database_url=database_url, **hsm_settings(hsm_prefix))
    after = _snapshot(hsm)
    for name in ("records", "lookups", "pseudonyms", "verifier_key"):
        assert after[name] == before[name], name
    assert after["checkpoints"] == before["checkpoints"]  # every old checkpoint verifies
    assert after["actions"] == [*before["actions"], "keys.migrated"]

    env = hsm_env(hsm_prefix)
    verified = _run(home, database_url, env, "audit", "verify")
    assert verified.returncode == 0 and "audit log intact" in verified.stdout, verified.stderr
    assert _run(home, database_url, env, "audit", "checkpoint").returncode == 0  # HSM signs
    rotated = _run(home, database_url, env, "keys", "rotate", "--destroy-retired")
    assert rotated.returncode == 0 and "destroyed 2 old KEKs" in rotated.stdout, rotated.stderr
    assert _snapshot(hsm)["records"] == before["records"]

    destroyed = _run(
        home, database_url, env, "keys", "migrate", "--to", "pkcs11", "--destroy-local"
    )
    assert destroyed.returncode == 0, destroyed.stderr  # a second run: done, nothing to redo
    assert not kept.exists() and not (home / "keyring.json").exists()


def test_an_interrupted_migration_resumes_and_completes(tmp_path: Path, hsm_prefix: str) -> None:
    url = f"sqlite:///{tmp_path / 'vault.db'}"
    home = tmp_path / "home"
    assert _run(home, url, {}, "init", "--demo", "--residents", "10").returncode == 0
    before = _snapshot(_local(home, url))
    # A crashed first run: one KEK and the blind-index key imported, nothing else.
    material = read_local(home / "keyring.json")
    objects = _objects(hsm_prefix)
    objects.create_aes_key(objects.label("kek", material.keks[0].kek_id), material.keks[0].key)
    objects.create_hmac_key(objects.label("bik", material.bik_id), material.bik)
    with pytest.raises(ConfigurationError, match="unfinished init or migration"):
        Pkcs11Keyring.open(Settings(**hsm_settings(hsm_prefix)))

    env = hsm_env(hsm_prefix)
    first = _run(home, url, env, "keys", "migrate", "--to", "pkcs11")
    assert first.returncode == 0, first.stderr
    # A crash after the switch but before the file was renamed: the next run finishes.
    (home / "keyring.json.migrated").rename(home / "keyring.json")
    second = _run(home, url, env, "keys", "migrate", "--to", "pkcs11")
    assert second.returncode == 0, second.stderr
    after = _snapshot(Settings(home=home, database_url=url, **hsm_settings(hsm_prefix)))
    assert after["records"] == before["records"] and after["pseudonyms"] == before["pseudonyms"]
    assert after["lookups"] == before["lookups"] and after["actions"].count("keys.migrated") == 2


def test_migration_refuses_a_prefix_that_holds_other_keys(tmp_path: Path, hsm_prefix: str) -> None:
    url = f"sqlite:///{tmp_path / 'vault.db'}"
    home = tmp_path / "home"
    assert _run(home, url, {}, "init").returncode == 0
    keyring_file = (home / "keyring.json").read_bytes()
    Pkcs11Keyring.create(Settings(**hsm_settings(hsm_prefix)))
    refused = _run(home, url, hsm_env(hsm_prefix), "keys", "migrate", "--to", "pkcs11")
    assert refused.returncode == 1 and "already holds another keyring" in _error(refused)
    assert (home / "keyring.json").read_bytes() == keyring_file

    stray = new_prefix()
    objects = _objects(stray)
    objects.write_data(objects.label("notes"), {"written": "by someone else"})
    try:
        refused = _run(home, url, hsm_env(stray), "keys", "migrate", "--to", "pkcs11")
        assert refused.returncode == 1 and "not this vault's keys" in _error(refused)
        assert (home / "keyring.json").read_bytes() == keyring_file
        assert [label for _c, label in objects.labels()] == [f"{stray}/notes"]
    finally:
        destroy_prefix(stray)


def test_an_hsm_vault_counts_as_initialised_without_a_key_file(
    tmp_path: Path, hsm_prefix: str
) -> None:
    """What `init` and `serve --demo` ask before creating keys: on the HSM there is no
    keyring.json to tell an initialised vault by."""
    settings = Settings(home=tmp_path / "home", **hsm_settings(hsm_prefix))
    assert not keyring_exists(settings)
    Pkcs11Keyring.create(settings)
    assert keyring_exists(settings)
    assert not keyring_exists(Settings(home=tmp_path / "home", **hsm_settings(new_prefix())))


# python-pkcs11 reports the lost session's unfinished search from a finaliser (noise).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_the_keyring_survives_the_hsm_dropping_its_session(hsm_prefix: str) -> None:
    """An HSM restart or failover closes every session; the keyring logs in again and the
    keys it finds are the same keys (what it wrapped opens, indexes and signatures agree)."""
    keyring = Pkcs11Keyring.create(Settings(**hsm_settings(hsm_prefix)))
    kek_id, wrapped = keyring.wrap(b"k" * 32, b"ctx")
    index = keyring.blind_index(b"13812345678")
    public = keyring.signing_public_key("audit-log")

    def drop_session() -> None:
        keyring._objects.call(lambda session: session.close())  # as a restarted HSM does

    drop_session()
    assert keyring.unwrap(kek_id, wrapped, b"ctx") == b"k" * 32
    drop_session()
    assert keyring.blind_index(b"13812345678") == index
    drop_session()
    Ed25519PublicKey.from_public_bytes(public).verify(keyring.sign("audit-log", b"m"), b"m")
    drop_session()
    again_id, again = keyring.wrap(b"j" * 32, b"ctx")
    assert keyring.unwrap(again_id, again, b"ctx") == b"j" * 32
