"""Key rotation, online and resumable.

- KEK rotation rewraps every data key under a new key-encryption key. Field ciphertexts
  are untouched, so it is cheap and readers never wait.
- Data-key rotation gives each resident a new data key and re-seals their record's
  documents (vault.records), moving any values still in `resident_fields` along.
- KEK rotation also re-tokens the statistics tokens (vault/stat_tokens.py) under the new
  KEK's epoch, mapping old tokens to their labels: nothing is decrypted for it either.

Both work in batches, each its own transaction, and keep their progress in
`key_rotations`: an interrupted rotation (crash, Ctrl-C, lost connection) resumes where it
stopped, and a half-done batch is rolled back, never left half-rewrapped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import Select, and_, func, select
from sqlalchemy.orm import Session, sessionmaker

from vault.crypto import data_key_context
from vault.errors import ConfigurationError
from vault.models import DataKeyRecord, KeyRotation, Resident, ResidentRecord, utcnow
from vault.records import CLASSES, by_class, column_of, open_class, seal_class
from vault.services import ResidentStore
from vault.stat_tokens import retoken

log = structlog.get_logger(__name__)

Progress = Callable[[int, int], None]
"""Called after each batch with (done so far, total at the start)."""


@dataclass(frozen=True)
class RotationReport:
    kind: str
    target: str
    processed: int
    resumed: bool
    retokened: int = 0


def _open_job(session: Session, kind: str) -> KeyRotation | None:
    return session.scalars(
        select(KeyRotation)
        .where(KeyRotation.kind == kind, KeyRotation.finished_at.is_(None))
        .order_by(KeyRotation.id)
    ).first()


def rotate_kek(
    factory: sessionmaker[Session],
    store: ResidentStore,
    *,
    batch_size: int = 500,
    progress: Progress | None = None,
) -> RotationReport:
    """Make a new active KEK (unless resuming) and rewrap every data key under it."""
    keyring = store.keyring
    with factory() as session, session.begin():
        job = _open_job(session, "kek")
        resumed = job is not None
        if job is None:
            job = KeyRotation(kind="kek", target=keyring.rotate_kek(), processed=0)
            session.add(job)
        elif job.target != keyring.active_kek_id():
            job.target = keyring.active_kek_id()  # someone rotated again meanwhile: follow
        session.flush()
        job_id, target = job.id, job.target
        total = (
            session.scalar(
                select(func.count())
                .select_from(DataKeyRecord)
                .where(DataKeyRecord.kek_id != target)
            )
            or 0
        )
    log.info("keys.kek_rotation.started", target=target, resumed=resumed, pending=total)
    done = 0
    while True:
        with factory() as session, session.begin():
            batch = list(
                session.scalars(
                    select(DataKeyRecord)
                    .where(DataKeyRecord.kek_id != target)
                    .order_by(DataKeyRecord.resident_id, DataKeyRecord.version)
                    .limit(batch_size)
                )
            )
            if not batch:
                break
            for record in batch:
                context = data_key_context(record.resident_id, record.version)
                raw = keyring.unwrap(record.kek_id, record.wrapped, context)
                record.kek_id, record.wrapped = keyring.wrap(raw, context)
            session.get_one(KeyRotation, job_id).processed += len(batch)
        done += len(batch)
        if progress:
            progress(done, total)
    # The job stays open until the tokens follow too, so a kill -9 here resumes here.
    retokened = retoken(factory, store, target, batch_size=batch_size)
    with factory() as session, session.begin():
        session.get_one(KeyRotation, job_id).finished_at = utcnow()
    log.info("keys.kek_rotation.finished", target=target, rewrapped=done, retokened=retokened)
    return RotationReport("kek", target, done, resumed, retokened)


def rotate_data_keys(
    factory: sessionmaker[Session],
    store: ResidentStore,
    *,
    batch_size: int = 200,
    progress: Progress | None = None,
) -> RotationReport:
    """Give every resident whose data key predates the rotation a new one, re-sealing fields."""
    with factory() as session, session.begin():
        job = _open_job(session, "data_keys")
        resumed = job is not None
        if job is None:
            job = KeyRotation(kind="data_keys", target=utcnow().isoformat(), processed=0)
            session.add(job)
            session.flush()
        job_id, started = job.id, job.started_at
        total = (
            session.scalar(select(func.count()).select_from(_stale_keys(started).subquery())) or 0
        )
    log.info("keys.data_key_rotation.started", resumed=resumed, pending=total)
    done = 0
    while True:
        with factory() as session, session.begin():
            residents = list(session.scalars(_stale_keys(started).limit(batch_size)))
            if not residents:
                session.get_one(KeyRotation, job_id).finished_at = utcnow()
                break
            for resident in residents:
                _reseal(session, store, resident)
            session.get_one(KeyRotation, job_id).processed += len(residents)
        done += len(residents)
        if progress:
            progress(done, total)
    log.info("keys.data_key_rotation.finished", resealed=done)
    return RotationReport("data_keys", started.isoformat(), done, resumed)


def _stale_keys(started: datetime) -> Select[Resident]:
    return (
        select(Resident)
        .join(
            DataKeyRecord,
            and_(
                DataKeyRecord.resident_id == Resident.id,
                DataKeyRecord.version == Resident.key_version,
            ),
        )
        .where(Resident.status == "active", DataKeyRecord.created_at < started)
        .order_by(Resident.id)
    )


def _reseal(session: Session, store: ResidentStore, resident: Resident) -> None:
    old = store.data_keys.get(session, resident.id, resident.key_version)
    new = store.data_keys.create(session, resident.id, resident.key_version + 1)
    record = session.get(ResidentRecord, resident.id)
    if record is not None:
        values: dict[str, object] = {}
        for doc_class in CLASSES:
            values.update(open_class(old, doc_class, getattr(record, column_of(doc_class))))
        # Regrouped by the catalogue's current classes, so a field whose grade changed
        # lands in its new class's document.
        groups = by_class(store.catalogue, values)
        for doc_class in CLASSES:
            content = {name: values[name] for name in groups.get(doc_class, [])}
            setattr(record, column_of(doc_class), seal_class(new, doc_class, content))
        record.key_version = new.version
    resident.key_version = new.version
    # Values not moved yet go along, sealed under the new key (vault.record_move).
    store.move_resident(session, resident)
    session.delete(session.get_one(DataKeyRecord, (resident.id, old.version)))
    store.data_keys.cache.evict(resident.id)
    store.data_keys.cache.put(new)


def destroy_retired_keks(factory: sessionmaker[Session], store: ResidentStore) -> list[str]:
    """Destroy KEKs no data key uses any more, so backups wrapped under them become unreadable."""
    keyring = store.keyring
    with factory() as session:
        in_use = set(session.scalars(select(DataKeyRecord.kek_id).distinct()))
        if _open_job(session, "kek") is not None:
            raise ConfigurationError("a KEK rotation is unfinished; run `keys rotate` to finish it")
    destroyed = []
    for info in keyring.keks():
        if not info.active and info.kek_id not in in_use:
            keyring.destroy_kek(info.kek_id)
            destroyed.append(info.kek_id)
    log.info("keys.kek_destroyed", kek_ids=destroyed)
    return destroyed
