"""Backups and the restore drill, as an operator runs them: real CLI processes, real databases.

Every drill runs on SQLite and on PostgreSQL, the PostgreSQL half with its keys in SoftHSM2
(as the rest of the suite: `tests/conftest.py`). The drill: back up while another thread
keeps registering residents, destroy the database, restore into a fresh one, and check
that the restore holds exactly what was committed before the backup's snapshot, that the
audit log verifies and that residents read the same and lookups find them. Also: a small
city moving from SQLite to PostgreSQL, an erasure made after the backup survives a restore
(tombstones), a damaged backup, the wrong backup identity, the wrong keyring, a missing
--yes or a non-empty target fail with one line and change nothing, and the backup holds no
value or key in clear.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import secrets
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import closing, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from access.runtime import open_runtime
from api.cli import backup as backup_cli
from api.cli.backup import SEEDED_BY_MIGRATIONS, backed_up_tables
from api.settings import Settings
from audit import EntryDraft
from audit import log as audit_log
from audit.models import AuditEntry
from audit.verify import verify_log
from consent.models import Consent
from tests.conftest import _require_postgres, suite_keyring
from tests.hsm import destroy_prefix, hsm_env, hsm_settings, new_prefix
from vault import backup as backup_module
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
from vault.context import open_vault
from vault.db import make_engine
from vault.errors import ResidentErased
from vault.models import Building, Household, Organisation, Resident, Room, Street
from vault.services import Provenance
from vault.synthetic import make_person

pytestmark = pytest.mark.slow


def _cli(home: Path, url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    return subprocess.run(
        [sys.executable, "-c", "from api.cli.main import main; main()", "--log-json", *args],
        capture_output=True,
        text=True,
        env={
            **clean,
            "VAULT_HOME": str(home),
            "VAULT_DATABASE_URL": url,
            "VAULT_LANG": "en",
            **env,
        },
        timeout=300,
        check=False,
    )


def _invoke(home: Path, url: str, *args: str, **env: str) -> str:
    """A command run in this process (the machine is shared: a process start costs seconds);
    the failure paths and the drill's restore run as real processes."""
    from typer.testing import CliRunner

    from api.cli.main import app

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


def _residents(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every active resident's decrypted record (the test's own view, not an access)."""
    vault = open_vault(settings)
    try:
        with vault.sessions() as session:
            ids = list(session.scalars(select(Resident.id).where(Resident.status == "active")))
            return vault.store.read_many(session, ids)
    finally:
        vault.close()


# Who the data commands act as: the demo's community worker, at the counter (issue 19).
AS_WORKER = ("--as", "community.xf", "--purpose", "counter-service")


def _canary(settings: Settings) -> tuple[str, str, str]:
    """A resident of the worker's community whose ID number and phone are theirs alone
    (not an office number)."""
    vault = open_vault(settings)
    try:
        with vault.sessions() as session:
            offices = set(session.scalars(select(Organisation.office_phone)))
            ids = session.scalars(
                select(Resident.id)
                .join(Household, Household.id == Resident.household_id)
                .join(Room, Room.id == Household.room_id)
                .join(Building, Building.id == Room.building_id)
                .where(
                    Resident.status == "active",
                    ~Resident.is_decoy,
                    Building.community_id == "cm_xingfu",
                )
            )
            for resident_id in ids:
                values = vault.store.read(session, resident_id, ["id_number", "phone"])
                if values.get("id_number") and values.get("phone") not in offices:
                    return resident_id, values["id_number"], values["phone"]
    finally:
        vault.close()
    raise AssertionError("the demo data has no resident with an ID number and own phone")


class Source:
    """A demo vault with audit entries from real commands, and a backup key pair.

    `keyring` is where its keys live: "local" (a keyring.json in the home) or "pkcs11"
    (this worker's SoftHSM2 token, under a label prefix of the vault's own).
    """

    def __init__(self, root: Path, url: str, keyring: str = "local") -> None:
        self.home = root / "home"
        self.url = url
        self.keys = root / "keys"
        self.prefix = new_prefix() if keyring == "pkcs11" else None
        self.env = hsm_env(self.prefix) if self.prefix else {}
        self.run("init", "--demo", "--residents", "40")
        self.resident_id, self.id_number, self.phone = _canary(self.settings())
        self.run("lookup", *AS_WORKER, "--phone", self.phone)
        self.run("export", self.resident_id, *AS_WORKER, "-o", str(root / "own.json"))
        self.run("audit", "checkpoint")
        self.run("backup", "keygen", "-o", str(self.keys))
        self.identity = self.keys / "backup-identity.pem"
        self.recipient = self.keys / "backup-recipient.pem"

    def settings(self, url: str | None = None) -> Settings:
        overrides = hsm_settings(self.prefix) if self.prefix else {}
        return Settings(home=self.home, database_url=url or self.url, **overrides)

    def cli(
        self, *args: str, url: str | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return _cli(self.home, url or self.url, *args, **self.env, **env)

    def run(self, *args: str, url: str | None = None) -> str:
        return _invoke(self.home, url or self.url, *args, **self.env)

    def backup(self, path: Path) -> str:
        return _invoke(
            self.home,
            self.url,
            "backup",
            "-o",
            str(path),
            VAULT_BACKUP_KEY_FILE=str(self.recipient),
            **self.env,
        )

    def restore(self, path: Path, *extra: str, url: str | None = None) -> Any:
        return self.cli(
            "restore", str(path), "--identity", str(self.identity), *extra, "--yes", url=url
        )

    def close(self) -> None:
        if self.prefix is not None:
            destroy_prefix(self.prefix)


@pytest.fixture
def source(tmp_path: Path, database_url: str) -> Iterator[Source]:
    made = Source(tmp_path, database_url, suite_keyring(database_url))
    yield made
    made.close()


class Registrations(threading.Thread):
    """The counter keeps working during the backup: one resident per transaction, with its
    audit entry in the same transaction, and a checkpoint now and then."""

    ACTOR = "drill-writer"

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.runtime = open_runtime(settings)
        self.committed: list[str] = []
        self.failure: BaseException | None = None
        self._stopping = threading.Event()
        self._progress = threading.Condition()

    def run(self) -> None:
        rng = random.Random(20261202)
        store, audit = self.runtime.vault.store, self.runtime.audit
        try:
            while not self._stopping.is_set():
                with self.runtime.transaction() as session:
                    values = make_person(rng)
                    provenance = Provenance(actor=self.ACTOR, channel="import")
                    resident_id = store.create(session, values, provenance)
                    draft = EntryDraft(
                        action="create",
                        outcome="allowed",
                        channel="cli",
                        user=self.ACTOR,
                        subject_type="operator",
                        resident_id=resident_id,
                        purpose="registration",
                        fields=dict.fromkeys(values, "written"),
                    )
                    audit.record(session, [draft])
                with self._progress:
                    self.committed.append(resident_id)
                    self._progress.notify_all()
                if len(self.committed) % 4 == 0:
                    self._checkpoint()
        except BaseException as exc:  # reported by wait_for and stop
            self.failure = exc
            with self._progress:
                self._progress.notify_all()

    def _checkpoint(self) -> None:
        """As the service's checkpoint task: a failure (on SQLite, another integrator at
        work, the backup's) waits for the next round."""
        with suppress(SQLAlchemyError):
            self.runtime.audit.checkpoint(self.runtime.vault.sessions)

    def wait_for(self, count: int) -> int:
        """Until `count` registrations have committed; how many have by then."""
        with self._progress:
            done = self._progress.wait_for(
                lambda: len(self.committed) >= count or self.failure is not None, timeout=120
            )
        assert done and self.failure is None, f"the writer stopped: {self.failure!r}"
        return len(self.committed)

    def stop(self) -> list[str]:
        self._stopping.set()
        self.join(timeout=120)
        self.runtime.close()
        assert self.failure is None, f"the writer failed: {self.failure!r}"
        return list(self.committed)


# -- the drill -----------------------------------------------------------------------------


def test_restore_drill_back_up_under_writes_destroy_restore_verify(
    source: Source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _residents(source.settings())
    with closing(open_vault(source.settings())) as vault_, vault_.sessions() as session:
        consents = int(session.scalar(select(func.count()).select_from(Consent)) or 0)
    assert consents > 0  # the demo's residents have consented to something

    # Registrations go on before, during and after the backup. The backup stops once inside
    # its snapshot (at its first table) until more registrations have committed.
    writer = Registrations(source.settings())
    writer.start()
    before_backup = writer.wait_for(3)
    at_snapshot: list[int] = []
    table_rows = backup_module.table_rows

    def rows_while_writes_commit(*args: Any, **kwargs: Any) -> Iterator[bytes]:
        if not at_snapshot:
            at_snapshot.append(len(writer.committed))
            writer.wait_for(at_snapshot[0] + 3)
        return table_rows(*args, **kwargs)

    monkeypatch.setattr(backup_module, "table_rows", rows_while_writes_commit)
    archive = tmp_path / "vault.rvbackup"
    written = source.backup(archive)
    monkeypatch.undo()
    registered = writer.stop()
    assert "the keyring is NOT in the backup" in written
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert len(registered) >= at_snapshot[0] + 3  # writes did commit while the backup read
    live = _residents(source.settings())

    _destroy(source.url)
    _create_empty(source.url)
    assert _tables(source.url) == []
    restored = source.restore(archive)
    assert restored.returncode == 0, restored.stderr
    assert "counts and hashes match" in restored.stdout
    assert "audit log intact" in restored.stdout
    assert "sampled 20 residents: all decrypt" in restored.stdout

    # Exactly what had committed when the snapshot was taken: a prefix of the registrations
    # (those before the backup started at least, none of those made while it read), each
    # with its audit entry, and every resident decrypting to what it was.
    after = _residents(source.settings())
    kept = [rid for rid in registered if rid in after]
    assert kept == registered[: len(kept)]
    assert before_backup <= len(kept) <= at_snapshot[0]
    assert after == {rid: record for rid, record in live.items() if rid in before or rid in kept}
    assert {rid: after[rid] for rid in before} == before
    with closing(open_vault(source.settings())) as vault_, vault_.sessions() as session:
        logged = set(
            session.scalars(
                select(AuditEntry.resident_id).where(AuditEntry.user == Registrations.ACTOR)
            )
        )
        assert logged == set(kept)
        assert session.scalar(select(func.count()).select_from(Consent)) == consents
        report = verify_log(session, _verifier_key(source))
    assert report.entries > 0 and report.checkpoints > 0
    found = source.run("lookup", *AS_WORKER, "--id-number", source.id_number)
    assert found.split() == [source.resident_id]
    # The restored vault goes on: new entries integrate and verify with the old ones.
    assert "audit log intact" in source.run("audit", "verify")


def _verifier_key(source: Source) -> str:
    return source.run("audit", "public-key").strip()


def test_restore_from_sqlite_into_postgresql(
    tmp_path: Path, postgres_template: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin_url = _require_postgres()
    sqlite_url = f"sqlite:///{tmp_path / 'vault.db'}"
    source = Source(tmp_path, sqlite_url)
    # The small city has kept its log for a while: an entry from a past month.
    monkeypatch.setattr(audit_log, "utcnow", lambda: datetime(2025, 6, 15, 9, tzinfo=UTC))
    runtime = open_runtime(source.settings())
    try:
        with runtime.transaction() as session:
            runtime.audit.record(session, [EntryDraft("quality.checked", "allowed", "cli")])
        runtime.audit.checkpoint(runtime.vault.sessions)
    finally:
        runtime.close()
    monkeypatch.undo()
    before = _residents(source.settings())
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
        source.run("restore", str(archive), "--identity", str(source.identity), "--yes", url=target)
        assert _residents(source.settings(target)) == before
        found = source.run("lookup", *AS_WORKER, "--phone", source.phone, url=target)
        assert source.resident_id in found.split()
        assert "audit log intact" in source.run("audit", "verify", url=target)
        # That month has its partition, as if the log had always been here: it can be
        # archived and detached like any other (the default partition stays empty).
        engine = create_engine(target)
        with engine.connect() as connection:
            past = connection.scalar(text("SELECT count(*) FROM audit_entries_2025_06"))
            stray = connection.scalar(text("SELECT count(*) FROM audit_entries_default"))
        engine.dispose()
        assert (past, stray) == (1, 0)
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
        "restore",
        str(archive),
        "--identity",
        str(source.identity),
        "--tombstones",
        str(tombstones),
        "--yes",
    )
    assert "replayed 1 erasure tombstones" in restored
    assert source.resident_id not in _residents(source.settings())
    with closing(open_vault(source.settings())) as vault_, vault_.sessions() as session:
        assert session.get(Resident, source.resident_id).status == "erased"  # type: ignore[union-attr]
        with pytest.raises(ResidentErased):
            vault_.store.read(session, source.resident_id)
    # Others may share the phone (a household's); the erased resident is no longer found.
    lookup = source.cli("lookup", *AS_WORKER, "--phone", source.phone)
    assert source.resident_id not in lookup.stdout


def test_full_target_missing_yes_bad_backup_or_wrong_identity_fail_in_one_line(
    source: Source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "vault.rvbackup"
    source.backup(archive)
    good = archive.read_bytes()
    # Authentic archives a restore must still refuse: one from a newer schema, and one
    # whose rows break a foreign key (households left out: residents point at them).
    head = backup_cli._manifest_head
    monkeypatch.setattr(
        backup_cli, "_manifest_head", lambda *a: {**head(*a), "alembic_revision": "9999"}
    )
    newer = tmp_path / "newer.rvbackup"
    source.backup(newer)
    monkeypatch.undo()
    every_table = backup_cli.backed_up_tables
    monkeypatch.setattr(
        backup_cli,
        "backed_up_tables",
        lambda: [t for t in every_table() if t.name != "households"],
    )
    orphans = tmp_path / "orphans.rvbackup"
    source.backup(orphans)
    monkeypatch.undo()
    counts = _row_counts(source.url)

    # A non-empty target (the live database itself) is refused, --yes or not, as it was.
    full = source.restore(archive)
    assert full.returncode == 1
    lines = _message_lines(full)
    assert len(lines) == 1 and "not empty" in lines[0], lines
    assert _row_counts(source.url) == counts

    _destroy(source.url)
    _create_empty(source.url)
    unconfirmed = source.cli("restore", str(archive), "--identity", str(source.identity))
    assert unconfirmed.returncode == 1
    lines = _message_lines(unconfirmed)
    assert len(lines) == 1 and "add --yes" in lines[0], lines
    assert _tables(source.url) == []

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
        "newer than this resident-vault knows": (newer, source.identity),
        "no row was kept": (orphans, source.identity),
    }
    for expected, (path, identity) in cases.items():
        failed = source.cli("restore", str(path), "--identity", str(identity), "--yes")
        assert failed.returncode == 1, expected
        lines = _message_lines(failed)
        assert len(lines) == 1 and expected in lines[0], lines
        assert "Traceback" not in failed.stderr
        if path is orphans:  # found while loading: the empty schema stays, no row
            counts = _row_counts(source.url)
            assert _tables(source.url) and not any(
                n for name, n in counts.items() if name not in SEEDED_BY_MIGRATIONS
            ), "only what a new schema holds (the seeded purpose registry)"
        else:  # found before anything was written
            assert _tables(source.url) == [], f"{expected}: the target was changed"
    assert "counts and hashes match" in source.run(
        "restore", str(archive), "--identity", str(source.identity), "--yes"
    )  # and the good one still restores


def test_restore_needs_the_backed_up_vaults_keyring(source: Source, tmp_path: Path) -> None:
    """The backup holds data keys wrapped by the keyring's KEKs, never the keyring: the
    local keyring's file or, with the HSM, the token's objects under the vault's prefix."""
    archive = tmp_path / "vault.rvbackup"
    source.backup(archive)
    with archive.open("rb") as handle:
        manifest = json.loads(list(decrypted_lines(handle, load_identity(source.identity)))[-1])
    assert manifest["keyring_included"] is False
    with closing(open_vault(source.settings())) as vault_:
        assert set(manifest["keks"]) <= {info.kek_id for info in vault_.keyring.keks()}

    # Another vault's keyring (another keyring file; another prefix in the same token).
    stranger = Source.__new__(Source)
    stranger.home, stranger.url = tmp_path / "stranger", f"sqlite:///{tmp_path / 'other.db'}"
    stranger.prefix = new_prefix() if source.prefix else None
    stranger.env = hsm_env(stranger.prefix) if stranger.prefix else {}
    stranger.identity = source.identity
    try:
        stranger.run("init")
        _destroy(source.url)
        _create_empty(source.url)
        refused = stranger.restore(archive, url=source.url)
        assert refused.returncode == 1
        lines = _message_lines(refused)
        assert len(lines) == 1 and "keyring is not the backed-up vault's" in lines[0], lines
        assert _tables(source.url) == []
    finally:
        stranger.close()
    assert source.restore(archive).returncode == 0  # the vault's own keyring restores it


def test_backup_holds_no_field_value_or_key_in_clear(tmp_path: Path) -> None:
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
    # No key of the keyring, in its base64 or raw bytes (the local keyring's file holds
    # them as base64 strings).
    secrets_ = _base64_strings(json.loads((source.home / "keyring.json").read_text()))
    assert secrets_
    for encoded in secrets_:
        assert encoded.encode() not in inside and base64.b64decode(encoded) not in inside
    # Structure in clear is the vault's own (ids, jurisdictions), as in the database.
    assert source.resident_id.encode() in inside


def _base64_strings(document: Any) -> list[str]:
    """Strings of 32 bytes or more in base64 anywhere in a JSON document: the key material."""
    if isinstance(document, dict):
        return [s for value in document.values() for s in _base64_strings(value)]
    if isinstance(document, list):
        return [s for value in document for s in _base64_strings(value)]
    if isinstance(document, str) and len(document) >= 43:
        try:
            return [document] if len(base64.b64decode(document, validate=True)) >= 32 else []
        except ValueError:
            return []
    return []


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
