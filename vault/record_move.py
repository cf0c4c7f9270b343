"""Moving a vault's per-field rows (`resident_fields`) into one record per resident.

Runs between the expand migration 0017 and the contract 0019, because it needs the keyring
(each value is opened and re-sealed into its class's document); a migration has none.
Like key rotation it works in batches, each its own transaction: a batch moves whole
residents and deletes their rows, so an interrupted move (crash, kill -9, lost connection)
leaves every resident in one place or the other, and the next run continues with the rows
still there. `key_rotations` (kind "records") notes that a move is under way and when it
finished. Meanwhile the store reads both places (vault.services).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog
from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from vault.db import migrate, schema_state, session_factory
from vault.models import KeyRotation, Resident, ResidentRecord, utcnow
from vault.records import LEGACY_FIELDS, legacy_table_exists
from vault.services import ResidentStore

log = structlog.get_logger(__name__)

JOB_KIND = "records"
EXPAND_REVISION = "0017"
CONTRACT_REVISION = "0019"

Progress = Callable[[int, int], None]
"""Called after each batch with (residents done so far, residents to move at the start)."""


@dataclass(frozen=True)
class MoveReport:
    residents: int  # residents whose rows this run moved (or dropped, if erased)
    fields: int  # field rows folded into records
    resumed: bool  # an earlier, interrupted move was under way
    table_gone: bool = False  # nothing to do: the contract already dropped the table


def _open_job(session: Session) -> KeyRotation | None:
    return session.scalars(
        select(KeyRotation)
        .where(KeyRotation.kind == JOB_KIND, KeyRotation.finished_at.is_(None))
        .order_by(KeyRotation.id)
    ).first()


def move_records(
    factory: sessionmaker[Session],
    store: ResidentStore,
    *,
    batch_size: int = 500,
    progress: Progress | None = None,
) -> MoveReport:
    """Move every resident still in `resident_fields`; resumes an interrupted move."""
    with factory() as session, session.begin():
        if not legacy_table_exists(session.connection()):
            return MoveReport(0, 0, resumed=False, table_gone=True)
        job = _open_job(session)
        resumed = job is not None
        total = int(
            session.scalar(select(func.count(func.distinct(LEGACY_FIELDS.c.resident_id)))) or 0
        )
        if job is None and not total:
            return MoveReport(0, 0, resumed=False)  # a new vault, or moved already
        if job is None:
            job = KeyRotation(kind=JOB_KIND, target="resident_records", processed=0)
            session.add(job)
            session.flush()
        job_id = job.id
    log.info("records.move.started", resumed=resumed, pending=total)
    done = fields = 0
    while True:
        with factory() as session, session.begin():
            ids = list(
                session.scalars(
                    select(LEGACY_FIELDS.c.resident_id)
                    .distinct()
                    .order_by(LEGACY_FIELDS.c.resident_id)
                    .limit(batch_size)
                )
            )
            if not ids:
                # An old node's erasure during the rolling deploy left the record behind.
                session.execute(
                    delete(ResidentRecord).where(
                        ResidentRecord.resident_id.in_(
                            select(Resident.id).where(Resident.status != "active")
                        )
                    )
                )
                session.get_one(KeyRotation, job_id).finished_at = utcnow()
                break
            # Locked, and their row version bumped: an update that read the resident before
            # this batch fails as stale instead of overwriting the record with what it read.
            residents = list(
                session.scalars(
                    select(Resident)
                    .where(Resident.id.in_(ids))
                    .order_by(Resident.id)
                    .with_for_update()
                )
            )
            for resident in residents:
                fields += store.move_resident(session, resident)
            session.execute(
                update(Resident)
                .where(Resident.id.in_(ids), Resident.status == "active")
                .values(row_version=Resident.row_version + 1)
                .execution_options(synchronize_session=False)
            )
            session.get_one(KeyRotation, job_id).processed += len(ids)
        done += len(ids)
        if progress:
            progress(done, total)
    log.info("records.move.finished", residents=done, fields=fields, resumed=resumed)
    return MoveReport(done, fields, resumed)


def contract_pending(engine: Engine) -> bool:
    """Whether the contract 0019 is still to apply (so `resident_fields` may hold rows)."""
    return CONTRACT_REVISION in schema_state(engine).behind


def upgrade_moving_records(engine: Engine, store: ResidentStore) -> MoveReport | None:
    """Migrate to the head, moving the per-field rows between the expand and the contract:
    what start-up with VAULT_MIGRATE_ON_START and a restore do. Returns the move's report
    when one ran."""
    report = None
    if contract_pending(engine):
        migrate(engine, EXPAND_REVISION)
        report = move_records(session_factory(engine), store)
    migrate(engine)
    return report
