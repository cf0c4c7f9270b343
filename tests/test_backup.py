"""Backups and the restore drill, as an operator runs them: real CLI processes, real databases.

The drill: back up, destroy the database, restore into a fresh one, and check that the
audit log verifies, residents read the same and lookups find them. Also: an erasure made
after the backup survives a restore (tombstones), a damaged backup, the wrong key or a
non-empty target fail with one line and change nothing, and the backup holds no value in
clear.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, inspect, select, text
from sqlalchemy.engine import make_url

from api.backup_cli import backed_up_tables
from audit.verify import verify_log
from tests.conftest import _require_postgres
from vault.backup import (
    BackupError,
    EncryptedWriter,
    decrypted_chunks,
    decrypted_lines,
    generate_key_pair,
    load_identity,
    load_recipient,
    snapshot,
)
from vault.config import VaultSettings
from vault.context import open_vault
from vault.db import make_engine
from vault.errors import ResidentErased
from vault.models import Organisation, Resident, Street

pytestmark = pytest.mark.slow


def _cli(home: Path, url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    return subprocess.run(
        [sys.executable, "-c", "from api.cli import main; main()", "--log-json", *args],
        capture_output=True,
        text=True,
        env={**clean, "VAULT_HOME": str(home), "VAULT_DATABASE_URL": url, "VAULT_LANG": "en",
             **env},
        timeout=300,
        check=False,
    )  # fmt: skip


def _invoke(home: Path, url: str, *args: str, **env: str) -> str:
    """A command run in this process (the machine is shared: a process start costs seconds);
    the failure paths and the drill's restore run as real processes."""
    from typer.testing import CliRunner

    from api.cli import app

    variables = {"VAULT_HOME": str(home), "VAULT_DATABASE_URL": url, "VAULT_LANG": "en", **env}
    result = CliRunner().invoke(app, ["--log-json", *args], env=variables, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def _message_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """What the operator reads on stderr, without the JSON log events."""
    return [line for line in result.stderr.splitlines() if line and not line.startswith("{")]


def _destroy(url: str) -> None:
    """The disaster: the database is gone."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{parsed.database}{suffix}").unlink(missing_ok=True)
        return
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
    admin.dispose()


def _create_empty(url: str) -> None:
    """A fresh database without tables (SQLite makes its file on first use)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()


def _tables(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        return sorted(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _row_counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            present = set(inspect(connection).get_table_names())
            return {
                t.name: int(connection.scalar(select(func.count()).select_from(t)) or 0)
                for t in backed_up_tables()
                if t.name in present
            }
    finally:
        engine.dispose()


def _residents(home: Path, url: str) -> dict[str, dict[str, Any]]:
    """Every active resident's decrypted record (the test's own view, not an access)."""
    vault = open_vault(VaultSettings(home=home, database_url=url))
    try:
        with vault.sessions() as session:
            ids = list(session.scalars(select(Resident.id).where(Resident.status == "active")))
            return vault.store.read_many(session, ids)
    finally:
        vault.close()


def _canary(home: Path, url: str) -> tuple[str, str, str]:
    """A resident whose ID number and phone are theirs alone (not an office number)."""
    vault = open_vault(VaultSettings(home=home, database_url=url))
    try:
        with vault.sessions() as session:
            offices = set(session.scalars(select(Organisation.office_phone)))
            ids = session.scalars(
                select(Resident.id).where(Resident.status == "active", ~Resident.is_decoy)
            )
            for resident_id in ids:
                values = vault.store.read(session, resident_id, ["id_number", "phone"])
                if values.get("id_number") and values.get("phone") not in offices:
                    return resident_id, values["id_number"], values["phone"]
    finally:
        vault.close()
    raise AssertionError("the demo data has no resident with an ID number and own phone")


class Source:
    """A demo vault with audit entries from real commands, and a backup key pair."""

    def __init__(self, root: Path, url: str) -> None:
        self.home = root / "home"
        self.url = url
        self.keys = root / "keys"
        _invoke(self.home, url, "init", "--demo", "--residents", "40")
        self.resident_id, self.id_number, self.phone = _canary(self.home, url)
        _invoke(self.home, url, "lookup", "--purpose", "registration", "--phone", self.phone)
        _invoke(self.home, url, "export", self.resident_id, "-o", str(root / "own.json"))
        _invoke(self.home, url, "audit", "checkpoint")
        _invoke(self.home, url, "backup", "keygen", "-o", str(self.keys))
        self.identity = self.keys / "backup-identity.pem"
        self.recipient = self.keys / "backup-recipient.pem"

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return _cli(self.home, self.url, *args, **env)

    def run(self, *args: str, url: str | None = None) -> str:
        return _invoke(self.home, url or self.url, *args)

    def backup(self, path: Path) -> str:
        return _invoke(
            self.home, self.url, "backup", "-o", str(path),
            VAULT_BACKUP_KEY_FILE=str(self.recipient),
        )  # fmt: skip

    def restore(self, path: Path, *extra: str, url: str | None = None) -> Any:
        return _cli(
            self.home, url or self.url, "restore", str(path), "--identity", str(self.identity),
            *extra, "--yes",
        )  # fmt: skip


@pytest.fixture
def source(tmp_path: Path, database_url: str) -> Source:
    return Source(tmp_path, database_url)


# -- the drill -----------------------------------------------------------------------------


def test_restore_drill_back_up_destroy_restore_verify(source: Source, tmp_path: Path) -> None:
    before = _residents(source.home, source.url)
    archive = tmp_path / "vault.rvbackup"
    written = source.backup(archive)
    assert "the keyring is NOT in the backup" in written
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600

    _destroy(source.url)
    _create_empty(source.url)
    assert _tables(source.url) == []
    restored = source.restore(archive)
    assert restored.returncode == 0, restored.stderr
    assert "counts and hashes match" in restored.stdout
    assert "audit log intact" in restored.stdout
    assert "sampled 20 residents: all decrypt" in restored.stdout

    assert _residents(source.home, source.url) == before
    vault = open_vault(VaultSettings(home=source.home, database_url=source.url))
    try:
        with vault.sessions() as session:
            report = verify_log(session, _verifier_key(source))
        assert report.entries > 0 and report.checkpoints > 0
    finally:
        vault.close()
    found = source.run("lookup", "--purpose", "registration", "--id-number", source.id_number)
    assert found.split() == [source.resident_id]
    # The restored vault goes on: new entries integrate and verify with the old ones.
    assert "audit log intact" in source.run("audit", "verify")


def _verifier_key(source: Source) -> str:
    return source.run("audit", "public-key").strip()


def test_restore_from_sqlite_into_postgresql(tmp_path: Path, postgres_template: str | None) -> None:
    admin_url = _require_postgres()
    sqlite_url = f"sqlite:///{tmp_path / 'vault.db'}"
    source = Source(tmp_path, sqlite_url)
    before = _residents(source.home, sqlite_url)
    archive = tmp_path / "vault.rvbackup"
    source.backup(archive)
    # A migrated but empty PostgreSQL database, as a provisioning job would leave it.
    assert postgres_template is not None
    name = f"rv_bk_{secrets.token_hex(5)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        template = make_url(postgres_template).database
        connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    target = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        source.run("restore", str(archive), "--identity", str(source.identity), "--yes",
                   url=target)  # fmt: skip
        assert _residents(source.home, target) == before
        found = source.run("lookup", "--purpose", "registration", "--phone", source.phone,
                           url=target)  # fmt: skip
        assert source.resident_id in found.split()
        assert "audit log intact" in source.run("audit", "verify", url=target)
        # Sequences continue after the restored rows: a rotation records its progress row.
        assert "key-encryption key is now" in source.run("keys", "rotate", url=target)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_resident_erased_after_the_backup_stays_erased(source: Source, tmp_path: Path) -> None:
    archive = tmp_path / "vault.rvbackup"
    source.backup(archive)
    source.run("erase", source.resident_id, "--reason", "PIPL Art. 47 request", "--yes")
    tombstones = tmp_path / "tombstones.json"
    source.run("audit", "tombstones", "export", "-o", str(tombstones))
    document = tombstones.read_text(encoding="utf-8")
    assert source.resident_id in document
    assert source.phone not in document and source.id_number not in document

    # A forged tombstones file (another resident's id over the proof) is refused.
    forged = tmp_path / "forged.json"
    data = json.loads(document)
    data["tombstones"][0]["resident_id"] = "r_0000000000000000"
    forged.write_text(json.dumps(data), encoding="utf-8")
    _destroy(source.url)
    _create_empty(source.url)
    refused = source.restore(archive, "--tombstones", str(forged))
    assert refused.returncode == 1
    assert len(_message_lines(refused)) == 1 and "not that resident's erasure" in refused.stderr
    assert _tables(source.url) == []

    restored = source.run(
        "restore", str(archive), "--identity", str(source.identity), "--tombstones",
        str(tombstones), "--yes",
    )  # fmt: skip
    assert "replayed 1 erasure tombstones" in restored
    assert source.resident_id not in _residents(source.home, source.url)
    vault = open_vault(VaultSettings(home=source.home, database_url=source.url))
    try:
        with vault.sessions() as session:
            assert session.get(Resident, source.resident_id).status == "erased"  # type: ignore[union-attr]
            with pytest.raises(ResidentErased):
                vault.store.read(session, source.resident_id)
    finally:
        vault.close()
    # Others may share the phone (a household's); the erased resident is no longer found.
    lookup = source.cli("lookup", "--purpose", "registration", "--phone", source.phone)
    assert source.resident_id not in lookup.stdout


def test_bad_backup_wrong_identity_or_full_target_fail_in_one_line(
    source: Source, tmp_path: Path
) -> None:
    archive = tmp_path / "vault.rvbackup"
    source.backup(archive)
    good = archive.read_bytes()
    counts = _row_counts(source.url)

    # A non-empty target (the live database itself) is refused and left as it was.
    full = source.restore(archive)
    assert full.returncode == 1
    lines = _message_lines(full)
    assert len(lines) == 1 and "not empty" in lines[0], lines
    assert _row_counts(source.url) == counts

    _destroy(source.url)
    _create_empty(source.url)
    other = tmp_path / "other-keys"
    generate_key_pair(other)
    tampered = tmp_path / "tampered.rvbackup"
    middle = len(good) // 2
    tampered.write_bytes(good[:middle] + bytes([good[middle] ^ 1]) + good[middle + 1 :])
    truncated = tmp_path / "truncated.rvbackup"
    truncated.write_bytes(good[: len(good) - 100])
    cases = {
        "does not authenticate": (tampered, source.identity),
        "truncated": (truncated, source.identity),
        "not to the identity given": (archive, other / "backup-identity.pem"),
    }
    for expected, (path, identity) in cases.items():
        failed = _cli(
            source.home, source.url, "restore", str(path), "--identity", str(identity), "--yes"
        )
        assert failed.returncode == 1, expected
        lines = _message_lines(failed)
        assert len(lines) == 1 and expected in lines[0], lines
        assert "Traceback" not in failed.stderr
        assert _tables(source.url) == [], f"{expected}: the target was changed"
    assert "counts and hashes match" in source.run(
        "restore", str(archive), "--identity", str(source.identity), "--yes"
    )  # and the good one still restores


def test_backup_holds_no_field_value_in_clear(tmp_path: Path) -> None:
    source = Source(tmp_path, f"sqlite:///{tmp_path / 'vault.db'}")
    archive = tmp_path / "vault.rvbackup"
    source.backup(archive)
    raw = archive.read_bytes()
    with archive.open("rb") as handle:
        inside = b"\n".join(decrypted_lines(handle, load_identity(source.identity)))
    assert b'"kind":"manifest"' in inside  # we did read the content
    for canary in (source.id_number, source.phone):
        for blob in (raw, inside):
            assert canary.encode() not in blob
            assert json.dumps(canary)[1:-1].encode() not in blob
    # Structure in clear is the vault's own (ids, jurisdictions), as in the database.
    assert source.resident_id.encode() in inside


def test_backup_older_than_its_kek_restores_unreadable_and_says_so(
    tmp_path: Path,
) -> None:
    source = Source(tmp_path, f"sqlite:///{tmp_path / 'vault.db'}")
    archive = tmp_path / "vault.rvbackup"
    source.backup(archive)
    # Retention passed: the KEK rotates, and the old one is destroyed.
    source.run("keys", "rotate", "--destroy-retired")
    _destroy(source.url)
    restored = source.restore(archive)
    assert restored.returncode == 2
    (line,) = _message_lines(restored)
    assert "residents are unreadable" in line and "no longer in the keyring" in line
    assert "sampled 0 residents" in restored.stdout


# -- consistency and the container -----------------------------------------------------------


def test_snapshot_does_not_see_writes_made_while_it_reads(vault: Any) -> None:
    with vault.sessions() as session, session.begin():
        session.add(Street(id="st_before", name="before", district="d"))
    seen: list[int] = []
    with snapshot(vault.engine) as connection:
        seen.append(int(connection.scalar(select(func.count()).select_from(Street))))

        def write() -> None:
            with vault.sessions() as session, session.begin():
                session.add(Street(id="st_during", name="during", district="d"))

        writer = threading.Thread(target=write)
        writer.start()
        writer.join()
        seen.append(int(connection.scalar(select(func.count()).select_from(Street))))
    with vault.sessions() as session:
        after = session.scalar(select(func.count()).select_from(Street))
    assert seen == [1, 1] and after == 2


def _chunked(tmp_path: Path, payload: bytes) -> tuple[bytes, Any]:
    pair = generate_key_pair(tmp_path / "k")
    sink = io.BytesIO()
    writer = EncryptedWriter(sink, load_recipient(pair.public_path), chunk_size=64)
    writer.write(payload)
    writer.close()
    return sink.getvalue(), load_identity(pair.private_path)


def test_chunks_cannot_be_reordered_dropped_or_extended(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 3
    blob, identity = _chunked(tmp_path, payload)
    assert b"".join(decrypted_chunks(io.BytesIO(blob), identity)) == payload
    header_end = 8 + 4 + int.from_bytes(blob[8:12], "big")
    frame = 4 + 1 + 64 + 16  # length, final flag, 64 bytes sealed with a 16-byte tag
    first, second = (
        blob[header_end : header_end + frame],
        blob[header_end + frame : header_end + 2 * frame],
    )
    swapped = blob[:header_end] + second + first + blob[header_end + 2 * frame :]
    dropped = blob[:header_end] + second + blob[header_end + 2 * frame :]
    final_cut = blob[: header_end + frame]  # one whole chunk, its final flag says more follows
    for bad in (swapped, dropped, final_cut, blob + b"\0"):
        with pytest.raises(BackupError):
            b"".join(decrypted_chunks(io.BytesIO(bad), identity))


def test_keygen_keeps_the_private_key_private_and_never_overwrites(tmp_path: Path) -> None:
    pair = generate_key_pair(tmp_path / "keys")
    assert stat.S_IMODE(pair.private_path.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" not in pair.public_path.read_bytes()
    with pytest.raises(BackupError, match="already exists"):
        generate_key_pair(tmp_path / "keys")
