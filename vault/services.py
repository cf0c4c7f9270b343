"""Resident records: validate, seal, store, read, look up and erase.

Every method takes the caller's `Session`, so the caller decides the transaction: the
access gate writes its audit entry in the same one, and a failed validation or a crash
leaves the previous version of a record intact. Nothing here knows who may see what;
that is policy's job, above this layer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import structlog
from sqlalchemy import Select, Table, bindparam, delete, insert, select
from sqlalchemy import update as sql_update
from sqlalchemy.orm import Session

from vault.blind_index import digest, find_residents, normalise_for_index
from vault.catalogue import Catalogue, default_catalogue
from vault.crypto import DataKey, open_field
from vault.db import bulk_insert
from vault.errors import (
    ResidentErased,
    ResidentNotFound,
    StaleRecord,
    UnknownField,
    ValidationFailed,
)
from vault.interfaces import Keyring
from vault.keys import DataKeyCache, DataKeys
from vault.models import (
    BlindIndexEntry,
    DataKeyRecord,
    Erasure,
    Resident,
    ResidentRecord,
    new_id,
    utcnow,
)
from vault.records import (
    CLASSES,
    LEGACY_FIELDS,
    FieldProvenance,
    by_class,
    class_of,
    column_of,
    decode_provenance,
    encode_provenance,
    legacy_table_exists,
    open_class,
    seal_class,
    seal_documents,
)
from vault.stat_tokens import LEGACY_TOKENS, ResidentStats, StatTokens, home_buildings
from vault.validators import validate_record

log = structlog.get_logger(__name__)

CHANNELS = ("import", "cli", "api", "desk", "self", "demo", "rotation")


@dataclass(frozen=True)
class Provenance:
    """Who wrote a value, through which channel, when, and when it was last verified."""

    actor: str
    channel: str
    at: datetime = field(default_factory=utcnow)
    verified_at: datetime | None = None


class Validated(dict[str, Any]):
    """Values that passed `ResidentStore.validate`, so a bulk insert need not check again."""


@dataclass(frozen=True)
class NewResident:
    values: Mapping[str, Any]
    household_id: str | None = None
    resident_id: str | None = None
    is_decoy: bool = False


def encode_value(value: Any) -> bytes:
    """Canonical JSON of a normalised value: the plaintext that gets sealed."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def decode_value(plaintext: bytes) -> Any:
    return json.loads(plaintext)


class ResidentStore:
    """The vault's resident records: one row each, a sealed document per sensitivity class
    under the resident's data key (vault.records)."""

    def __init__(
        self,
        keyring: Keyring,
        catalogue: Catalogue | None = None,
        key_cache: DataKeyCache | None = None,
    ) -> None:
        self.keyring = keyring
        self.catalogue = catalogue or default_catalogue()
        self.data_keys = DataKeys(keyring, key_cache)
        self.stat_tokens = StatTokens(keyring, self.catalogue)
        self._match_fields = frozenset(
            name
            for spec in self.catalogue
            if spec.matches
            for name in (spec.name, *spec.matches.values())
        )
        # Set once `resident_fields` is found gone (migration 0019): never looked for again.
        self._legacy_gone = False
        self._statements: dict[tuple[tuple[str, ...], bool, bool], Select[Any]] = {}

    # -- writing ---------------------------------------------------------------------------

    def create(
        self,
        session: Session,
        values: Mapping[str, Any],
        provenance: Provenance,
        *,
        household_id: str | None = None,
        resident_id: str | None = None,
    ) -> str:
        """Validate and store a new resident; raises ValidationFailed and writes nothing."""
        return self.create_many(
            session, [NewResident(values, household_id, resident_id)], provenance
        )[0]

    def create_many(
        self, session: Session, residents: Sequence[NewResident], provenance: Provenance
    ) -> list[str]:
        """Validate all, then insert all with a few multi-row statements (imports, demo data).

        Validation of every record happens before the first insert, so a bad record
        leaves nothing behind; the caller's transaction covers the inserts.
        """
        prepared = [
            (r, r.values if isinstance(r.values, Validated) else self.validate(r.values))
            for r in residents
        ]
        resident_rows: list[dict[str, Any]] = []
        key_rows: list[dict[str, Any]] = []
        record_rows: list[dict[str, Any]] = []
        index_rows: list[dict[str, Any]] = []
        token_rows: list[dict[str, Any]] = []  # the code before 0027's, until it has run
        stats_rows: list[dict[str, Any]] = []
        ids: list[str] = []
        tokens = self.stat_tokens
        legacy = not tokens.contracted(session)
        epoch = tokens.epoch()
        buildings = (
            {}
            if legacy
            else home_buildings(session, [r.household_id for r in residents if r.household_id])
        )
        for new, normalised in prepared:
            resident_id = new.resident_id or new_id("r")
            ids.append(resident_id)
            if legacy:
                token_rows += tokens.legacy_rows(resident_id, normalised)
            elif not new.is_decoy:  # decoys are never counted
                home = (new.household_id, buildings.get(new.household_id or ""))
                stats_rows.append(tokens.created_row(session, resident_id, normalised, home, epoch))
            resident_rows.append(
                {
                    "id": resident_id,
                    "household_id": new.household_id,
                    "status": "active",
                    "key_version": 1,
                    "row_version": 1,
                    "is_decoy": new.is_decoy,
                    "created_at": provenance.at,
                    "updated_at": provenance.at,
                }
            )
            key, key_row = self.data_keys.new(resident_id, 1)
            key_rows.append(key_row)
            record, indexes = self._sealed_rows(resident_id, key, normalised, provenance)
            record_rows.append(record)
            index_rows += indexes
        for table, rows in (
            (Resident, resident_rows),
            (DataKeyRecord, key_rows),
            (ResidentRecord, record_rows),
            (BlindIndexEntry, index_rows),
            (ResidentStats, stats_rows),
        ):
            bulk_insert(session, cast(Table, table.__table__), rows)
        bulk_insert(session, LEGACY_TOKENS, token_rows)
        log.info("residents.created", count=len(ids), channel=provenance.channel)
        return ids

    def update(
        self,
        session: Session,
        resident_id: str,
        values: Mapping[str, Any],
        provenance: Provenance,
        *,
        expected_version: int | None = None,
    ) -> int:
        """Change some fields (None clears one); all or nothing. Returns the new row version."""
        resident = self._active(session, resident_id)
        if expected_version is not None and resident.row_version != expected_version:
            raise StaleRecord(resident_id)
        involved = self._match_fields & set(values)
        existing = (
            self.read(session, resident_id, sorted(self._match_fields - set(values)))
            if involved
            else {}
        )
        normalised = self.validate({k: v for k, v in values.items() if v is not None}, existing)
        cleared = [name for name, value in values.items() if value is None]
        if cleared:
            session.execute(
                delete(BlindIndexEntry).where(
                    BlindIndexEntry.resident_id == resident_id,
                    BlindIndexEntry.field.in_(cleared),
                )
            )
        key = self.data_keys.get(session, resident_id, resident.key_version)
        self._write_fields(session, resident_id, key, normalised, provenance, cleared=cleared)
        self.stat_tokens.replace(session, resident_id, normalised, cleared)
        resident.updated_at = provenance.at
        session.flush()  # bumps row_version; a concurrent writer's flush fails instead
        log.info(
            "resident.updated",
            resident_id=resident_id,
            fields=sorted(set(normalised) | set(cleared)),
            channel=provenance.channel,
        )
        return resident.row_version

    def mark_verified(
        self, session: Session, resident_id: str, fields: Iterable[str], at: datetime
    ) -> None:
        """Record that a worker checked these values with the resident (data quality)."""
        self._active(session, resident_id)
        names = list(fields)
        record = session.get(ResidentRecord, resident_id)
        if record is not None:
            known = decode_provenance(record.provenance)
            for name in set(names) & set(known):
                was = known[name]
                known[name] = FieldProvenance(was.written_by, was.channel, was.written_at, at)
            record.provenance = encode_provenance(known)
        if self._legacy_present(session):  # values not moved yet (vault.record_move)
            session.execute(
                sql_update(LEGACY_FIELDS)
                .where(LEGACY_FIELDS.c.resident_id == resident_id, LEGACY_FIELDS.c.field.in_(names))
                .values(verified_at=at)
            )

    def validate(
        self, values: Mapping[str, Any], existing: Mapping[str, Any] | None = None
    ) -> Validated:
        """Normalised values, or ValidationFailed naming every problem at once."""
        normalised, problems = validate_record(self.catalogue, values, existing or {})
        if problems:
            raise ValidationFailed(problems)
        return Validated(normalised)

    def _sealed_rows(
        self, resident_id: str, key: DataKey, values: Mapping[str, Any], provenance: Provenance
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A new resident's record row (every class sealed) and blind-index rows."""
        written = FieldProvenance(
            provenance.actor, provenance.channel, provenance.at, provenance.verified_at
        )
        record = {
            "resident_id": resident_id,
            "key_version": key.version,
            **seal_documents(self.catalogue, key, values),
            "provenance": encode_provenance(dict.fromkeys(values, written)),
        }
        return record, self._index_rows(resident_id, values)

    def _index_rows(self, resident_id: str, values: Mapping[str, Any]) -> list[dict[str, Any]]:
        indexes: list[dict[str, Any]] = []
        for name, value in values.items():
            spec = self.catalogue[name]
            if spec.searchable:
                indexes.append(
                    {
                        "resident_id": resident_id,
                        "field": name,
                        "scheme": self.keyring.blind_index_scheme,
                        "digest": digest(self.keyring, spec, normalise_for_index(spec, str(value))),
                    }
                )
        return indexes

    def _write_fields(
        self,
        session: Session,
        resident_id: str,
        key: DataKey,
        values: Mapping[str, Any],
        provenance: Provenance,
        *,
        cleared: Sequence[str] = (),
    ) -> None:
        """Replace these fields' values (an update) and clear `cleared`: only the documents
        of the classes involved are opened and re-sealed; the caller's transaction makes it
        atomic. A resident still (partly) in `resident_fields` moves here whole."""
        written = FieldProvenance(
            provenance.actor, provenance.channel, provenance.at, provenance.verified_at
        )
        self._store_values(
            session, resident_id, key, {n: (v, written) for n, v in values.items()}, cleared
        )
        names = list(values)
        session.execute(
            delete(BlindIndexEntry).where(
                BlindIndexEntry.resident_id == resident_id, BlindIndexEntry.field.in_(names)
            )
        )
        indexes = self._index_rows(resident_id, values)
        if indexes:
            session.execute(insert(BlindIndexEntry), indexes)

    def _store_values(
        self,
        session: Session,
        resident_id: str,
        key: DataKey,
        changes: Mapping[str, tuple[Any, FieldProvenance]],
        cleared: Sequence[str] = (),
    ) -> None:
        """Write values with their provenance into the resident's record (sealed under
        `key`), folding in and deleting what `resident_fields` still holds of them."""
        legacy = self._legacy_values(session, [resident_id]).get(resident_id, {})
        merged = {**legacy, **changes}  # values not moved yet are older than these
        record = session.get(ResidentRecord, resident_id)
        if record is None:
            record = ResidentRecord(resident_id=resident_id, key_version=key.version, provenance="")
            session.add(record)
            stale = False
        else:
            stale = record.key_version != key.version
        # Under another key (never after a finished rotation) every class is re-sealed.
        touched = (
            set(CLASSES) if stale else {class_of(self.catalogue, n) for n in (*merged, *cleared)}
        )
        old_key = self.data_keys.get(session, resident_id, record.key_version) if stale else key
        known = decode_provenance(record.provenance)
        for doc_class in sorted(touched):
            column = column_of(doc_class)
            content = open_class(old_key, doc_class, getattr(record, column))
            for name, (value, _) in merged.items():
                if class_of(self.catalogue, name) == doc_class:
                    content[name] = value
            for name in cleared:
                content.pop(name, None)
            setattr(record, column, seal_class(key, doc_class, content))
        for name, (_, written) in merged.items():
            known[name] = written
        for name in cleared:
            known.pop(name, None)
        record.key_version = key.version
        record.provenance = encode_provenance(known)
        if legacy or (cleared and self._legacy_present(session)):
            session.execute(delete(LEGACY_FIELDS).where(LEGACY_FIELDS.c.resident_id == resident_id))

    # -- reading ---------------------------------------------------------------------------

    def read(
        self, session: Session, resident_id: str, fields: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Decrypt the named fields (all by default) of one resident; absent fields are left out."""
        resident = self._active(session, resident_id)
        records = self.read_many(session, [resident.id], fields)
        return records.get(resident.id, {})

    def read_many(
        self, session: Session, resident_ids: Sequence[str], fields: Sequence[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Decrypt only the named fields of many residents, in a few queries.

        Fields that will not be returned are never fetched, let alone decrypted.
        """
        names = self._field_names(fields)
        groups = by_class(self.catalogue, names)
        one = len(resident_ids) == 1  # a single read: no IN list to expand per execution
        # Keys joined to records only where both come from one database: a read session on a
        # replica takes data keys from the primary (vault.db.read_session_factory), so that
        # an erasure holds at once while the replica lags.
        joined = session.get_bind(DataKeyRecord) is session.get_bind(ResidentRecord)
        statement = self._records_with_keys(tuple(groups), one, joined)
        leading = 5 if joined else 2  # id, version (and suite, kek, wrapped key) first
        legacy = self._legacy_present(session)
        result: dict[str, dict[str, Any]] = {}
        connection = session.connection(bind_arguments={"mapper": ResidentRecord})
        for start in range(0, len(resident_ids), 500):
            chunk = list(resident_ids[start : start + 500])
            rows = connection.execute(statement, {"ids": chunk[0] if one else chunk}).all()
            if joined:
                keys = {
                    (r[0], r[1]): self.data_keys.unwrap_stored(r[0], r[1], r[2], r[3], r[4])
                    for r in rows
                    if r[4] is not None  # no key row: erased
                }
            else:
                keys = self.data_keys.get_many(session, {(r[0], r[1]) for r in rows})
            for row in rows:
                resident_id, version, documents = row[0], row[1], row[leading:]
                key = keys.get((resident_id, version))
                if key is None:
                    raise ResidentErased(resident_id)
                values: dict[str, Any] = {}
                for doc_class, document in zip(groups, documents, strict=True):
                    if document is not None:
                        values.update(open_class(key, doc_class, document))
                found = {n: values[n] for n in names if n in values}
                if found:
                    result[resident_id] = found
            if legacy:
                for resident_id, moved in self._legacy_values(session, chunk, names).items():
                    result.setdefault(resident_id, {}).update(
                        {name: value for name, (value, _) in moved.items()}
                    )
        return result

    def _records_with_keys(self, classes: tuple[str, ...], one: bool, joined: bool) -> Select[Any]:
        """Records' documents of these classes, with their data keys when `joined`, in one
        statement (Core, built once per shape: the hot read path asks for the same few).
        The parameter `ids` is one id when `one`, else a list."""
        statement = self._statements.get((classes, one, joined))
        if statement is None:
            keys = DataKeyRecord.__table__
            records = ResidentRecord.__table__
            key_columns = (keys.c.suite, keys.c.kek_id, keys.c.wrapped) if joined else ()
            statement = select(
                records.c.resident_id,
                records.c.key_version,
                *key_columns,
                *(records.c[column_of(c)] for c in classes),
            ).select_from(records)
            if joined:
                statement = statement.outerjoin(
                    keys,
                    (keys.c.resident_id == records.c.resident_id)
                    & (keys.c.version == records.c.key_version),
                )
            statement = statement.where(
                records.c.resident_id == bindparam("ids")
                if one
                else records.c.resident_id.in_(bindparam("ids", expanding=True))
            )
            self._statements[classes, one, joined] = statement
        return statement

    def provenance(self, session: Session, resident_id: str) -> dict[str, FieldProvenance]:
        self._active(session, resident_id)
        found = decode_provenance(
            session.scalar(
                select(ResidentRecord.provenance).where(ResidentRecord.resident_id == resident_id)
            )
        )
        legacy = self._legacy_values(session, [resident_id], decrypt=False)
        found.update({n: p for n, (_, p) in legacy.get(resident_id, {}).items()})
        return found

    # -- values not moved yet (resident_fields, until migration 0019) ----------------------

    def _legacy_present(self, session: Session) -> bool:
        if self._legacy_gone:
            return False
        present = legacy_table_exists(session.connection())
        self._legacy_gone = not present
        return present

    def _legacy_values(
        self,
        session: Session,
        resident_ids: Sequence[str],
        names: Sequence[str] | None = None,
        *,
        decrypt: bool = True,
    ) -> dict[str, dict[str, tuple[Any, FieldProvenance]]]:
        """What `resident_fields` still holds of these residents: value and provenance by
        field (the value None when not `decrypt`); empty once the table is gone."""
        if not resident_ids or not self._legacy_present(session):
            return {}
        table = LEGACY_FIELDS
        query = select(table).where(table.c.resident_id.in_(list(resident_ids)))
        if names is not None:
            query = query.where(table.c.field.in_(list(names)))
        rows = session.execute(query).all()
        keys = (
            self.data_keys.get_many(session, {(r.resident_id, r.key_version) for r in rows})
            if decrypt
            else {}
        )
        found: dict[str, dict[str, tuple[Any, FieldProvenance]]] = {}
        for row in rows:
            value = None
            if decrypt:
                key = keys.get((row.resident_id, row.key_version))
                if key is None:
                    raise ResidentErased(row.resident_id)
                value = decode_value(open_field(key, row.field, row.ciphertext))
            written = FieldProvenance(row.written_by, row.channel, row.written_at, row.verified_at)
            found.setdefault(row.resident_id, {})[row.field] = (value, written)
        return found

    def move_resident(self, session: Session, resident: Resident) -> int:
        """Fold what `resident_fields` holds of this resident into its record (re-sealed
        under the current data key) and delete those rows; a resident no longer active only
        loses them. Returns how many field rows moved (vault.record_move)."""
        if resident.status != "active":
            moved = session.execute(
                delete(LEGACY_FIELDS).where(LEGACY_FIELDS.c.resident_id == resident.id)
            )
            session.execute(delete(ResidentRecord).where(ResidentRecord.resident_id == resident.id))
            return int(moved.rowcount or 0)  # type: ignore[attr-defined]
        legacy = self._legacy_values(session, [resident.id]).get(resident.id, {})
        if legacy:
            key = self.data_keys.get(session, resident.id, resident.key_version)
            self._store_values(session, resident.id, key, {})
        return len(legacy)

    def find(self, session: Session, field_name: str, raw_value: str) -> list[str]:
        """Resident ids whose identifier matches, through the blind index."""
        return find_residents(session, self.keyring, self.catalogue, field_name, raw_value)

    def _field_names(self, fields: Sequence[str] | None) -> list[str]:
        if fields is None:
            return list(self.catalogue.names)
        for name in fields:
            if name not in self.catalogue:
                raise UnknownField(name)
        return list(fields)

    def _active(self, session: Session, resident_id: str) -> Resident:
        resident = session.get(Resident, resident_id)
        if resident is None:
            raise ResidentNotFound(resident_id)
        if resident.status != "active":
            raise ResidentErased(resident_id)
        return resident

    # -- erasure ---------------------------------------------------------------------------

    def erase(self, session: Session, resident_id: str, actor: str, reason: str) -> None:
        """Crypto-shred: destroy the data keys, drop ciphertexts and indexes, keep a tombstone.

        The caller records the erasure in the audit log in the same transaction.
        """
        resident = self._active(session, resident_id)
        now = utcnow()
        session.add(Erasure(resident_id=resident_id, erased_at=now, erased_by=actor, reason=reason))
        self._shred(session, resident, now)
        log.info("resident.erased", resident_id=resident_id)

    def _shred(self, session: Session, resident: Resident, at: datetime) -> None:
        self.stat_tokens.drop(session, resident.id)
        for table in (DataKeyRecord, ResidentRecord, BlindIndexEntry):
            session.execute(delete(table).where(table.resident_id == resident.id))
        if self._legacy_present(session):
            session.execute(delete(LEGACY_FIELDS).where(LEGACY_FIELDS.c.resident_id == resident.id))
        resident.status = "erased"
        resident.erased_at = at
        resident.updated_at = at
        session.flush()
        self.data_keys.cache.evict(resident.id)

    def replay_erasures(self, session: Session) -> int:
        """After a restore, erase again every resident a tombstone names. Returns the count."""
        erased = 0
        for tombstone in session.scalars(select(Erasure)):
            resident = session.get(Resident, tombstone.resident_id)
            if resident is not None and resident.status == "active":
                self._shred(session, resident, tombstone.erased_at)
                erased += 1
        return erased
