"""The local keyring: generated at init, private, refuses to be overwritten or loaded loosely."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from vault.crypto import Suite
from vault.errors import ConfigurationError, DecryptionFailed, KeyNotFound
from vault.keyring import LocalKeyring


@pytest.mark.parametrize("suite", list(Suite))
def test_created_keyring_is_private_and_wraps_round_trip(tmp_path: Path, suite: Suite) -> None:
    path = tmp_path / "keyring.json"
    keyring = LocalKeyring.create(path, suite)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    kek_id, wrapped = keyring.wrap(b"k" * suite.key_size, b"context")
    reloaded = LocalKeyring.load(path)
    assert reloaded.unwrap(kek_id, wrapped, b"context") == b"k" * suite.key_size
    with pytest.raises(DecryptionFailed):
        reloaded.unwrap(kek_id, wrapped, b"another context")


def test_service_refuses_to_start_without_or_with_a_loose_keyring(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    with pytest.raises(ConfigurationError, match="init"):
        LocalKeyring.load(path)
    LocalKeyring.create(path)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        LocalKeyring.load(path)


def test_create_never_overwrites_existing_keys(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    LocalKeyring.create(path)
    before = path.read_bytes()
    with pytest.raises(ConfigurationError):
        LocalKeyring.create(path)
    assert path.read_bytes() == before


def test_rotation_keeps_old_keks_until_destroyed(tmp_path: Path) -> None:
    keyring = LocalKeyring.create(tmp_path / "keyring.json")
    old_id, wrapped = keyring.wrap(b"x" * 32, b"c")
    new_id = keyring.rotate_kek()
    assert keyring.active_kek_id() == new_id != old_id
    assert LocalKeyring.load(tmp_path / "keyring.json").unwrap(old_id, wrapped, b"c") == b"x" * 32
    with pytest.raises(ConfigurationError):
        keyring.destroy_kek(new_id)
    keyring.destroy_kek(old_id)
    with pytest.raises(KeyNotFound):
        LocalKeyring.load(tmp_path / "keyring.json").unwrap(old_id, wrapped, b"c")


def test_blind_index_is_keyed_per_vault(tmp_path: Path) -> None:
    one = LocalKeyring.create(tmp_path / "a.json")
    two = LocalKeyring.create(tmp_path / "b.json")
    assert one.blind_index(b"13812345678") == one.blind_index(b"13812345678")
    assert one.blind_index(b"13812345678") != two.blind_index(b"13812345678")


def test_damaged_keyring_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    path.write_text("{not json")
    os.chmod(path, 0o600)
    with pytest.raises(ConfigurationError, match="damaged"):
        LocalKeyring.load(path)


def test_two_processes_holding_the_keyring_never_drop_each_others_keys(tmp_path: Path) -> None:
    """The service and a CLI command load the same file; each change starts from the file."""
    path = tmp_path / "keyring.json"
    LocalKeyring.create(path)
    service, command = LocalKeyring.load(path), LocalKeyring.load(path)
    audit_key = service.signing_public_key("audit-log")  # the service makes its signing key
    rotated = command.rotate_kek()  # the older copy rotates: it must keep the signing key
    receipts_key = service.signing_public_key("receipts")  # and the service keeps the KEK
    on_disk = LocalKeyring.load(path)
    assert on_disk.active_kek_id() == rotated
    assert on_disk.signing_public_key("audit-log") == audit_key
    assert on_disk.signing_public_key("receipts") == receipts_key
    assert command.signing_public_key("audit-log") == audit_key  # not a second, different key
    assert service.pseudonym_key("org_a") == command.pseudonym_key("org_a")
