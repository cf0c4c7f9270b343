"""`resident-vault backup | restore | audit tombstones export`: encrypted backups and the drill.

    resident-vault backup keygen -o /secure/backup-keys      # once; private key goes offline
    resident-vault backup -o vault-2026-12-02.rvbackup        # VAULT_BACKUP_KEY_FILE = public key
    resident-vault audit tombstones export -o tombstones.json # regularly, kept off-site
    resident-vault restore vault.rvbackup --identity backup-identity.pem \\
        --tombstones tombstones.json --yes

A backup is one consistent snapshot of every table, encrypted to the backup public key.
The keyring is not in it: a stolen backup without the keyring is ciphertext only. A restore
goes into an empty database (on PostgreSQL with the audit log's monthly partitions for the
backup's months, so old months can still be archived), replays the erasure tombstones so
no one erased comes back, and proves itself: the audit log verifies against the checkpoint
the backup recorded, every table's rows hash as they did, and a sample of residents
decrypt and are found by their blind indexes. Exit 0: proven; 1: failed (the target is
left as it was when the failure is in the backup, the identity or the target; with only
its empty schema when the rows do not load); 2: restored, but residents whose
key-encryption keys were destroyed are unreadable, by design.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer
from alembic.runtime.migration import MigrationContext
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sqlalchemy import Connection, Engine, Table, func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from access.runtime import Runtime, operator_name
from api.cli.common import Actor, argument, err, group, operator_access, option, out, runtime
from api.cli.lang import help_text, say
from api.models import metadata
from api.settings import Settings
from audit import AuditLog, EntryDraft, VerificationFailed, operator_event
from audit.checkpoint import CheckpointError, format_tlog_proof, verify_tlog_proof
from audit.models import AuditCheckpoint, AuditEntry, AuditLeaf, AuditQueue
from audit.partitions import PARENT
from audit.verify import verify_log
from vault.backup import (
    BackupError,
    EncryptedWriter,
    count_rows,
    decrypted_lines,
    generate_key_pair,
    insert_batch,
    load_identity,
    load_recipient,
    read_backup,
    reset_sequences,
    snapshot,
    table_digest,
    user_tables,
)
from vault.context import open_vault
from vault.db import migrate, migration_phases
from vault.errors import VaultError
from vault.models import DataKeyRecord, Erasure, Resident
from vault.record_move import upgrade_moving_records
from vault.records import LEGACY_FIELDS, legacy_table_exists

log = structlog.get_logger(__name__)

backup_app = group("cli.help.backup", invoke_without_command=True, no_args_is_help=False)
tombstones_app = group("cli.help.audit.tombstones")

TOMBSTONES_FORMAT = "resident-vault-tombstones/1"
SAMPLE_SIZE = 20
# Tables about the schema itself: the restore's own migrations write them.
# The schema's own bookkeeping, never backed up: the migrations write it. The change stamp
# (vault.stamps) is only a cache's signal, and the restore's writes move the target's own.
SCHEMA_TABLES = frozenset({"schema_phases", "change_stamps"})
EXIT_UNREADABLE = 2


class RestoreFailed(BackupError):
    """One line saying what failed; exit code 1 (shown as a BackupError is)."""


def backed_up_tables() -> list[Table]:
    """Every table of every package, parents before children (foreign-key order)."""
    return [t for t in metadata.sorted_tables if t.name not in SCHEMA_TABLES]


# -- backup --------------------------------------------------------------------------------


@dataclass
class BackupSummary:
    path: Path
    manifest: dict[str, Any]
    bytes_written: int
    sha256: str

    @property
    def rows(self) -> int:
        return sum(int(t["rows"]) for t in self.manifest["tables"].values())


def _manifest_head(connection: Connection, runtime: Runtime) -> dict[str, Any]:
    """What the restore needs to know before and after loading, read inside the snapshot."""
    latest = connection.execute(
        select(AuditCheckpoint.tree_size, AuditCheckpoint.checkpoint)
        .order_by(AuditCheckpoint.tree_size.desc())
        .limit(1)
    ).first()
    last_leaf = connection.scalar(select(func.max(AuditLeaf.leaf_index)))
    first_entry = connection.scalar(select(func.min(AuditEntry.recorded_at)))
    keks = sorted(connection.scalars(select(DataKeyRecord.kek_id).distinct()))
    return {
        "format": 1,
        "alembic_revision": MigrationContext.configure(connection).get_current_revision(),
        "created_at": datetime.now(UTC).isoformat(),
        "source_dialect": connection.dialect.name,
        "audit": {
            "origin": runtime.audit.origin,
            "verifier_key": runtime.audit.verifier_key,
            "tree_size": 0 if last_leaf is None else int(last_leaf) + 1,
            "checkpoint": latest.checkpoint if latest else None,
            "checkpoint_size": int(latest.tree_size) if latest else 0,
            # The restore makes the monthly partitions from here on (PostgreSQL).
            "first_recorded_at": first_entry.isoformat() if first_entry else None,
        },
        "keks": keks,
        "blind_index_scheme": runtime.vault.keyring.blind_index_scheme,
        "keyring_included": False,
    }


def _fresh_checkpoint(runtime: Runtime, attempts: int = 3) -> None:
    """A signed head of everything recorded so far, for the manifest. Another integrator at
    work (the service's, on SQLite, can collide with ours) is no reason to fail a backup:
    try again, and in the end the snapshot's latest head serves as well."""
    for attempt in range(1, attempts + 1):
        try:
            runtime.audit.checkpoint(runtime.vault.sessions)
            return
        except SQLAlchemyError as exc:
            log.warning("backup.checkpoint_retried", error=type(exc).__name__, attempt=attempt)
            time.sleep(0.2 * attempt)


def create_backup(runtime: Runtime, output: Path, recipient_path: Path) -> BackupSummary:
    """Write one consistent, encrypted snapshot of every table to `output` (atomically)."""
    recipient = load_recipient(recipient_path)
    if output.exists():
        raise BackupError(f"{output} already exists; backups are never overwritten")
    _fresh_checkpoint(runtime)
    partial = output.with_name(output.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as sink:
            with snapshot(runtime.vault.engine) as connection:
                writer = EncryptedWriter(sink, recipient)
                manifest = write_backup_tables(connection, runtime, writer)
            # After the snapshot ends: flushing gigabytes must not hold it open.
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(partial, output)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    with output.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256")
    summary = BackupSummary(output, manifest, writer.bytes_written, digest.hexdigest())
    details = {
        "file_sha256": summary.sha256,
        "rows": summary.rows,
        "audit_tree_size": manifest["audit"]["tree_size"],
        "created_at": manifest["created_at"],
    }
    with runtime.transaction() as session:
        runtime.audit.record(session, [operator_event("backup.created", operator_name(), details)])
    log.info("backup.created", rows=summary.rows, bytes=summary.bytes_written)
    return summary


def write_backup_tables(
    connection: Connection, runtime: Runtime, writer: EncryptedWriter
) -> dict[str, Any]:
    from vault.backup import write_backup  # noqa: PLC0415 - kept beside its one caller

    tables = backed_up_tables()
    if legacy_table_exists(connection):
        # Between migrations 0017 and 0019 values not moved yet are still in the per-field
        # table (vault/record_move.py); its one parent, residents, comes before.
        tables.append(LEGACY_FIELDS)
    return write_backup(connection, tables, writer, _manifest_head(connection, runtime))


@backup_app.callback()
def backup(
    ctx: typer.Context,
    output: Annotated[Path | None, option("cli.help.backup.output", "--output", "-o")] = None,
    recipient: Annotated[Path | None, option("cli.help.backup.recipient")] = None,
) -> None:
    """Write one consistent, encrypted backup of every table (the group's help says so)."""
    if ctx.invoked_subcommand is not None:
        return
    if output is None:
        raise BackupError(say("cli.backup.no-output"))
    configured = Settings()
    key_path = recipient or configured.backup_key_file
    if key_path is None:
        raise BackupError(say("cli.backup.no-key"))
    with runtime(configured) as rt:
        summary = create_backup(rt, output, key_path)
    manifest = summary.manifest
    out.print(
        say(
            "cli.backup.written",
            output=output,
            tables=len(manifest["tables"]),
            rows=summary.rows,
            bytes_written=summary.bytes_written,
            tree_size=manifest["audit"]["tree_size"],
        ),
        markup=False,
    )
    out.print(f"sha256 {summary.sha256}", markup=False)
    out.print(
        say("cli.backup.keyring-not-included", keks=", ".join(manifest["keks"])),
        markup=False,
    )


@backup_app.command("keygen", help=help_text("cli.help.backup.keygen"))
def backup_keygen(
    output: Annotated[Path, option("cli.help.backup.keygen.output", "--output", "-o")],
) -> None:
    """Make the X25519 key pair backups are encrypted to."""
    pair = generate_key_pair(output)
    # The message names the fields of KeyPair it shows.
    out.print(say("cli.backup.keygen.written", **asdict(pair)), markup=False)


# -- tombstones ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Tombstone:
    resident_id: str
    index: int
    erased_at: datetime
    erased_by: str
    reason: str


def export_tombstones(runtime: Runtime, output: Path) -> int:
    """Every erasure in the log, each with an inclusion proof to one signed checkpoint."""
    runtime.audit.checkpoint(runtime.vault.sessions, force=True)
    with runtime.vault.sessions() as session:
        head = runtime.audit.latest_checkpoint(session)
        if head is None:
            raise BackupError("the audit log is empty")
        rows = session.execute(
            select(AuditLeaf.leaf_index, AuditEntry)
            .join(AuditEntry, AuditEntry.entry_id == AuditLeaf.entry_id)
            .where(
                AuditEntry.action == "resident.erased",
                AuditEntry.outcome == "allowed",
                AuditLeaf.leaf_index < head.tree_size,
            )
            .order_by(AuditLeaf.leaf_index)
        ).all()
        waiting = session.scalar(
            select(func.count())
            .select_from(AuditQueue)
            .join(AuditEntry, AuditEntry.entry_id == AuditQueue.entry_id)
            .where(AuditEntry.action == "resident.erased")
        )
        if waiting:
            raise BackupError(
                f"{waiting} erasures are not yet in the signed log; run the export again"
            )
        items = [
            {
                "resident_id": entry.resident_id,
                "index": int(index),
                "proof": format_tlog_proof(
                    entry.canonical,
                    int(index),
                    runtime.audit.inclusion_proof(session, int(index), head.tree_size),
                    head.checkpoint,
                ),
            }
            for index, entry in rows
        ]
    document = {
        "format": TOMBSTONES_FORMAT,
        "exported_at": datetime.now(UTC).isoformat(),
        "origin": runtime.audit.origin,
        "verifier_key": runtime.audit.verifier_key,
        "tree_size": head.tree_size,
        "checkpoint": head.checkpoint,
        "tombstones": items,
    }
    partial = output.with_name(output.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(document, handle, ensure_ascii=False, indent=1)
    os.replace(partial, output)
    details = {"tombstones": len(items), "tree_size": head.tree_size}
    event = operator_event("audit.tombstones_exported", operator_name(), details)
    with runtime.transaction() as session:
        runtime.audit.record(session, [event])
    return len(items)


def read_tombstones(path: Path, verifier_key: str) -> list[Tombstone]:
    """The tombstones of a file, each proven to be an erasure signed into this vault's log."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RestoreFailed(
            f"cannot read the tombstones file {path} ({type(exc).__name__})"
        ) from None
    if not isinstance(document, dict) or document.get("format") != TOMBSTONES_FORMAT:
        raise RestoreFailed(f"{path} is not a tombstones file ({TOMBSTONES_FORMAT})")
    found: list[Tombstone] = []
    for item in document.get("tombstones", []):
        try:
            proven = verify_tlog_proof(str(item["proof"]), verifier_key)
            entry = json.loads(proven.entry)
        except (CheckpointError, KeyError, TypeError, ValueError) as exc:
            raise RestoreFailed(
                f"{path}: a tombstone does not verify against this vault's audit key ({exc})"
            ) from None
        if (
            entry.get("action") != "resident.erased"
            or entry.get("outcome") != "allowed"
            or entry.get("resident_id") != item.get("resident_id")
        ):
            raise RestoreFailed(f"{path}: entry {proven.index} is not that resident's erasure")
        found.append(
            Tombstone(
                resident_id=str(entry["resident_id"]),
                index=proven.index,
                erased_at=datetime.fromisoformat(entry["recorded_at"]),
                erased_by=str(entry.get("user") or "unknown"),
                reason=str((entry.get("details") or {}).get("reason", "")),
            )
        )
    return found


@tombstones_app.command("export", help=help_text("cli.help.audit.tombstones.export"))
def tombstones_export(
    output: Annotated[Path, option("cli.help.audit.tombstones.export.output", "--output", "-o")],
) -> None:
    """Export the log's erasure tombstones, with proofs (no personal data)."""
    with runtime() as rt:
        count = export_tombstones(rt, output)
    out.print(
        say("cli.audit.tombstones.export.exported", count=count, output=output),
        markup=False,
    )


# -- restore -------------------------------------------------------------------------------


@dataclass
class RestoreReport:
    manifest: dict[str, Any]
    rows: int = 0
    audit_entries: int = 0
    tombstones_replayed: int = 0
    tombstones_not_in_backup: int = 0
    sampled: int = 0
    unreadable_residents: int = 0
    missing_keks: list[str] = field(default_factory=list)


# Tables a new schema already holds rows in (migration 0015 seeds the purpose registry and
# its first data revision, 0016 which statistics fields have complete tokens, 0027 their
# slots; the tokens themselves are an ordinary table the backup carries): an empty target
# still counts as empty, and the load replaces them with the backup's. In the order they
# can be emptied (mandates refer to purposes).
SEEDED_BY_MIGRATIONS = (
    "mandates",
    "purposes",
    "policy_data_changes",
    "stat_token_fields",
    "stat_token_slots",
)


def _check_target_empty(
    engine_tables: Sequence[str], connection: Connection, tables: Sequence[Table], revision: str
) -> bool:
    """True if the schema must be created; RestoreFailed unless the target holds no rows."""
    ours = [name for name in engine_tables if name != "alembic_version"]
    if not ours:
        return True
    filled = {
        name: n
        for name, n in count_rows(connection, tables).items()
        if n and name not in SEEDED_BY_MIGRATIONS
    }
    if filled:
        raise RestoreFailed(
            f"the target database is not empty ({len(filled)} tables hold rows, e.g. "
            f"{sorted(filled)[0]}); restore only into an empty database"
        )
    current = MigrationContext.configure(connection).get_current_revision()
    if current != revision:
        raise RestoreFailed(
            f"the empty target's schema is at {current}, the backup's at {revision}: restore "
            "into a database without tables"
        )
    return False


def restore_backup(
    settings: Settings,
    archive: Path,
    identity_path: Path,
    tombstones_path: Path | None,
    *,
    actor: str | None = None,
    sample_size: int = SAMPLE_SIZE,
) -> RestoreReport:
    identity = load_identity(identity_path)
    tables = backed_up_tables()
    # A backup from before migration 0019 may hold resident_fields: known, to be moved.
    by_name = {t.name: t for t in tables} | {LEGACY_FIELDS.name: LEGACY_FIELDS}
    vault = open_vault(settings, upgrade_schema=False)  # refuses to run without the keyring
    try:
        audit = AuditLog(vault.keyring, settings.resolved_log_origin)
        # 1. Read and authenticate the whole archive before touching the target.
        manifest = _authenticated_manifest(archive, identity, by_name, audit)
        tombstones = read_tombstones(tombstones_path, audit.verifier_key) if tombstones_path else []
        revision = str(manifest["alembic_revision"])
        if LEGACY_FIELDS.name not in manifest["tables"]:
            del by_name[LEGACY_FIELDS.name]
        with vault.engine.connect() as connection:
            create_schema = _check_target_empty(
                user_tables(vault.engine), connection, tables, revision
            )
        # 2. Load: the schema at the backup's revision, then every row in one transaction.
        if create_schema:
            migrate(vault.engine, revision)
        _load_rows(vault.engine, archive, identity, by_name, manifest)
        report = RestoreReport(manifest)
        # 3. The rows in the database hash as they did when backed up.
        with vault.engine.connect() as connection:
            report.rows = _check_digests(connection, by_name, manifest)
        # Then to this code's head; an older backup's per-field rows move on the way.
        upgrade_moving_records(vault.engine, vault.store)
        # 4. The audit log verifies in full, against the checkpoint the backup recorded.
        with vault.sessions() as session:
            verified = verify_log(
                session, audit.verifier_key, external_checkpoint=manifest["audit"]["checkpoint"]
            )
        if verified.entries < manifest["audit"]["tree_size"]:
            raise RestoreFailed(
                f"the restored audit log has {verified.entries} entries, the backup recorded "
                f"{manifest['audit']['tree_size']}"
            )
        report.audit_entries = verified.entries
        # 5. Erasures made after the backup are made again, and recorded.
        who = operator_name(actor)
        with vault.sessions() as session, session.begin():
            report.tombstones_replayed, report.tombstones_not_in_backup = _replay(
                session, vault.store, audit, tombstones, who
            )
            audit.record(session, [_restored_event(who, manifest, report)])
        audit.checkpoint(vault.sessions)
        # 6. Key-encryption keys the backup needs and the keyring no longer has.
        present = {info.kek_id for info in vault.keyring.keks()}
        report.missing_keks = [k for k in manifest["keks"] if k not in present]
        with vault.sessions() as session, session.begin():
            if report.missing_keks:
                report.unreadable_residents = int(
                    session.scalar(
                        select(func.count(func.distinct(DataKeyRecord.resident_id))).where(
                            DataKeyRecord.kek_id.in_(report.missing_keks)
                        )
                    )
                    or 0
                )
            report.sampled = _prove_sample(
                session, vault.store, audit, report.missing_keks, who=who, sample_size=sample_size
            )
        audit.checkpoint(vault.sessions)
        log.info(
            "backup.restored",
            rows=report.rows,
            tombstones=report.tombstones_replayed,
            sampled=report.sampled,
        )
        return report
    except VerificationFailed as exc:
        raise RestoreFailed(f"the restored audit log does not verify: {exc}") from None
    finally:
        vault.close()


def _load_rows(
    engine: Engine,
    archive: Path,
    identity: X25519PrivateKey,
    tables: Mapping[str, Table],
    manifest: Mapping[str, Any],
) -> None:
    """Every row in one transaction (with the audit partitions they need): all or none."""
    try:
        with archive.open("rb") as source, engine.begin() as connection:
            for name in SEEDED_BY_MIGRATIONS:  # the backup holds these rows as they were
                connection.execute(tables[name].delete())
            _audit_partitions_for(connection, manifest["audit"].get("first_recorded_at"))
            read_backup(
                decrypted_lines(source, identity),
                tables,
                on_batch=lambda batch: insert_batch(connection, tables, batch),
            )
            reset_sequences(connection, list(tables.values()))
    except SQLAlchemyError as exc:
        # No row stays. The schema does, empty, so a second attempt (into it or after
        # dropping it) starts from the same place.
        cause = type(getattr(exc, "orig", None) or exc).__name__
        raise RestoreFailed(say("cli.restore.rows-not-loaded", cause=cause)) from None


def _audit_partitions_for(connection: Connection, first_recorded_at: str | None) -> int:
    """PostgreSQL: a monthly audit partition for every month from the backup's oldest entry,
    made before its rows arrive. The schema makes them from last month on only; older rows
    would land in the default partition, where `audit partitions detach` cannot archive a
    month and no partition can be made for it any more."""
    if first_recorded_at is None or connection.dialect.name != "postgresql":
        return 0
    # Months as the migrations' audit_ensure_partitions computes them (session time zone).
    months = connection.execute(
        text(
            "SELECT 'audit_entries_' || to_char(m, 'YYYY_MM'), m::date, "
            "(m + interval '1 month')::date FROM generate_series("
            "date_trunc('month', CAST(:first AS timestamptz)), date_trunc('month', now()), "
            "interval '1 month') AS m"
        ),
        {"first": first_recorded_at},
    ).all()
    created = 0
    for name, lower, upper in months:
        if connection.scalar(text("SELECT to_regclass(:name)"), {"name": name}) is not None:
            continue
        connection.exec_driver_sql(
            f"CREATE TABLE {name} PARTITION OF {PARENT} FOR VALUES FROM ('{lower}') TO ('{upper}')"
        )
        connection.exec_driver_sql(
            f"CREATE TRIGGER {name}_no_truncate BEFORE TRUNCATE ON {name} "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()"
        )
        created += 1
    return created


def _authenticated_manifest(
    archive: Path, identity: X25519PrivateKey, tables: Mapping[str, Table], audit: AuditLog
) -> dict[str, Any]:
    """Decrypt and check the whole archive, changing nothing; its manifest if all is well."""
    try:
        with archive.open("rb") as source:
            manifest = read_backup(decrypted_lines(source, identity), tables)
    except OSError as exc:
        raise RestoreFailed(f"cannot read {archive} ({type(exc).__name__})") from None
    revision = str(manifest["alembic_revision"])
    if revision not in migration_phases():
        raise RestoreFailed(say("cli.restore.schema-newer", revision=revision))
    recorded = manifest["audit"]
    if recorded["origin"] != audit.origin:
        raise RestoreFailed(
            f"the backup's audit log is {recorded['origin']!r}, this configuration's is "
            f"{audit.origin!r}: set VAULT_DEPLOYMENT / VAULT_LOG_ORIGIN as on the source"
        )
    if recorded["verifier_key"] != audit.verifier_key:
        raise RestoreFailed(
            "this keyring is not the backed-up vault's (its audit signing key differs): "
            "restore with the escrowed keyring"
        )
    return manifest


def _check_digests(
    connection: Connection, tables: Mapping[str, Table], manifest: Mapping[str, Any]
) -> int:
    """The rows now in the database hash as they did when backed up; returns their count."""
    total = 0
    for name, expected in manifest["tables"].items():
        found = table_digest(connection, tables[name], expected["columns"])
        if (found.rows, found.sha256) != (expected["rows"], expected["sha256"]):
            raise RestoreFailed(
                f"table {name}: {found.rows} rows restored, {expected['rows']} backed up, "
                "or their hash differs"
            )
        total += found.rows
    return total


def _replay(
    session: Session, store: Any, audit: AuditLog, tombstones: Sequence[Tombstone], who: str
) -> tuple[int, int]:
    """Tombstones from the live log become erasures here too; returns (replayed, unknown)."""
    absent = 0
    fresh: list[Tombstone] = []
    for tombstone in tombstones:
        resident = session.get(Resident, tombstone.resident_id)
        if resident is None:
            absent += 1  # created after the backup: nothing of theirs was restored
            continue
        if session.get(Erasure, tombstone.resident_id) is None:
            session.add(
                Erasure(
                    resident_id=tombstone.resident_id,
                    erased_at=tombstone.erased_at,
                    erased_by=tombstone.erased_by,
                    reason=tombstone.reason,
                )
            )
            fresh.append(tombstone)
    session.flush()
    store.replay_erasures(session)  # also any tombstone the backup itself held
    audit.record(
        session,
        [
            operator_event(
                "resident.erasure_replayed",
                who,
                {"erased_at": t_.erased_at.isoformat(), "tombstone_index": t_.index},
                resident_id=t_.resident_id,
            )
            for t_ in fresh
        ],
    )
    return len(fresh), absent


def _restored_event(who: str, manifest: dict[str, Any], report: RestoreReport) -> EntryDraft:
    return operator_event(
        "backup.restored",
        who,
        {
            "backup_created_at": manifest["created_at"],
            "rows": report.rows,
            "revision": manifest["alembic_revision"],
            "audit_tree_size": manifest["audit"]["tree_size"],
            "tombstones_replayed": report.tombstones_replayed,
        },
    )


def _prove_sample(
    session: Session,
    store: Any,
    audit: AuditLog,
    missing_keks: Sequence[str],
    *,
    who: str,
    sample_size: int,
) -> int:
    """Random residents decrypt, and each identifier's blind index finds them again.

    The reads are recorded in the audit log like any other: nothing decrypts unaudited.
    """
    candidates = select(Resident.id).where(Resident.status == "active", ~Resident.is_decoy)
    if missing_keks:
        candidates = candidates.where(
            ~Resident.id.in_(
                select(DataKeyRecord.resident_id).where(DataKeyRecord.kek_id.in_(missing_keks))
            )
        )
    ids = list(session.scalars(candidates))
    chosen = random.SystemRandom().sample(ids, min(sample_size, len(ids)))
    drafts: list[EntryDraft] = []
    for resident_id in chosen:
        try:
            record = store.read(session, resident_id)
        except VaultError as exc:
            raise RestoreFailed(
                f"resident {resident_id} does not decrypt after the restore ({type(exc).__name__})"
            ) from None
        for spec in store.catalogue.searchable:
            value = record.get(spec.name)
            if value is not None and resident_id not in store.find(session, spec.name, str(value)):
                raise RestoreFailed(
                    f"resident {resident_id} is not found by the blind index of {spec.name}"
                )
        checked = dict.fromkeys(record, "checked")
        drafts.append(
            operator_access("restore-verify", who, resident_id, "backup-verification", checked)
        )
    audit.record(session, drafts)
    return len(chosen)


def restore(
    archive: Annotated[Path, argument("cli.help.main.restore.archive")],
    identity: Annotated[Path, option("cli.help.main.restore.identity")],
    tombstones: Annotated[Path | None, option("cli.help.main.restore.tombstones")] = None,
    yes: Annotated[bool, option("cli.help.main.restore.yes", "--yes")] = False,
    actor: Actor = None,
) -> None:
    """Restore a backup into an empty database and prove it (registered by api.cli.main)."""
    if not yes:
        raise RestoreFailed(say("cli.restore.needs-yes"))
    report = restore_backup(Settings(), archive, identity, tombstones, actor=actor)
    manifest = report.manifest
    lines = [
        say(
            "cli.restore.rows",
            rows=report.rows,
            tables=len(manifest["tables"]),
            created_at=manifest["created_at"],
            alembic_revision=manifest["alembic_revision"],
        ),
        say(
            "cli.restore.audit",
            audit_entries=report.audit_entries,
            checkpoint_size=manifest["audit"]["checkpoint_size"],
        ),
        say(
            "cli.restore.tombstones",
            tombstones_replayed=report.tombstones_replayed,
            tombstones_not_in_backup=report.tombstones_not_in_backup,
        ),
        say("cli.restore.sample", sampled=report.sampled),
    ]
    for line in lines:
        out.print(line, markup=False)
    if report.missing_keks:
        err.print(
            say(
                "cli.restore.unreadable",
                residents=report.unreadable_residents,
                keks=", ".join(report.missing_keks),
            ),
            markup=False,
        )
        raise typer.Exit(EXIT_UNREADABLE)
