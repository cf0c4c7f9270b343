"""The storage layout of residents' values: one `resident_records` row per resident.

A row holds one AEAD document per sensitivity class (the catalogue's grade, L1..L4), each
the canonical JSON object of that class's fields sealed under the resident's data key
(`vault.crypto.seal_document`), and a compact provenance map in clear, as the per-field
rows had it (who wrote each field, through which channel, when, last verified).

Reading a few fields opens only the documents of their classes; a write re-seals only the
classes it touches. Until migration 0019 drops it, the per-field table of 0001
(`resident_fields`, `LEGACY_FIELDS` here) may still hold a vault's older values:
`vault.record_move` moves them, and the store reads both meanwhile.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Column, Connection, Integer, LargeBinary, MetaData, String, Table, text

from vault.catalogue import GRADES, Catalogue
from vault.crypto import DataKey, open_document, seal_document
from vault.models import TZDateTime

# The sensitivity classes, in column order: one document column each.
CLASSES: tuple[str, ...] = tuple(sorted(GRADES))
# A value whose field the catalogue no longer names stays with the most protected class.
FALLBACK_CLASS = "L4"
PROVENANCE_FORMAT = 1
# Stored short codes of the catalogue's fields, in documents (key "3" for "id_number") and
# in provenance (bit 3). Append-only: a code, once written, must always mean the same field;
# a field without one is stored under its name.
FIELD_CODES: tuple[str, ...] = (
    "name", "gender", "birth_date", "id_number", "phone", "address", "hukou_type",
    "residence_type", "household_relation", "ethnicity", "religion", "health_conditions",
    "disability", "low_income_status", "subsidy_amount", "elderly_living_alone",
    "veteran_status", "political_status", "employment_status", "emergency_contact",
    "vehicle_plate", "integrity_records",
)  # fmt: skip
_CODE_OF = {name: str(code) for code, name in enumerate(FIELD_CODES)}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def column_of(doc_class: str) -> str:
    return f"doc_{doc_class.lower()}"


def class_of(catalogue: Catalogue, name: str) -> str:
    return catalogue[name].grade if name in catalogue else FALLBACK_CLASS


def by_class(catalogue: Catalogue, names: Iterable[str]) -> dict[str, list[str]]:
    """Field names grouped by the class whose document holds them, in class order."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(class_of(catalogue, name), []).append(name)
    return {c: groups[c] for c in CLASSES if c in groups}


def _canonical(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def seal_class(key: DataKey, doc_class: str, values: Mapping[str, Any]) -> bytes | None:
    """The class's document, or None when the resident has no value in it."""
    if not values:
        return None
    coded = {_CODE_OF.get(name, name): value for name, value in values.items()}
    return seal_document(key, doc_class, _canonical(coded))


def open_class(key: DataKey, doc_class: str, document: bytes | None) -> dict[str, Any]:
    if document is None:
        return {}
    coded = json.loads(open_document(key, doc_class, document))
    if not isinstance(coded, dict):
        raise ValueError("a document holds an object")
    return {(FIELD_CODES[int(k)] if k.isdigit() else k): value for k, value in coded.items()}


def seal_documents(
    catalogue: Catalogue, key: DataKey, values: Mapping[str, Any]
) -> dict[str, bytes | None]:
    """Every class's document column for these values (None for an empty class)."""
    groups: dict[str, dict[str, Any]] = {c: {} for c in CLASSES}
    for name, value in values.items():
        groups[class_of(catalogue, name)][name] = value
    return {column_of(c): seal_class(key, c, groups[c]) for c in CLASSES}


# -- provenance ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldProvenance:
    written_by: str
    channel: str
    written_at: datetime
    verified_at: datetime | None


def _micros(at: datetime) -> int:
    return (at.astimezone(UTC) - _EPOCH) // _MICROSECOND


def _at(micros: int) -> datetime:
    return _EPOCH + micros * _MICROSECOND


def encode_provenance(fields: Mapping[str, FieldProvenance]) -> str:
    """Compact JSON: each distinct (writer, channel, written, verified) once, with the
    fields it covers as a bit mask of their codes (and the names of fields without one);
    an import writes one such entry per resident, not one per field."""
    groups: dict[tuple[str, str, int, int | None], list[str]] = {}
    # A resident's fields mostly share one provenance object: its head is made once.
    heads: dict[int, tuple[str, str, int, int | None]] = {}
    for name in sorted(fields):
        p = fields[name]
        head = heads.get(id(p))
        if head is None:
            verified = None if p.verified_at is None else _micros(p.verified_at)
            head = heads[id(p)] = (p.written_by, p.channel, _micros(p.written_at), verified)
        groups.setdefault(head, []).append(name)
    entries: list[list[Any]] = []
    for head, names in groups.items():
        mask = sum(1 << int(_CODE_OF[n]) for n in names if n in _CODE_OF)
        others = [n for n in names if n not in _CODE_OF]
        entries.append([*head, mask, *([others] if others else [])])
    return json.dumps(
        {"v": PROVENANCE_FORMAT, "p": entries}, ensure_ascii=False, separators=(",", ":")
    )


def decode_provenance(encoded: str | None) -> dict[str, FieldProvenance]:
    if not encoded:
        return {}
    raw = json.loads(encoded)
    if raw.get("v") != PROVENANCE_FORMAT:
        raise ValueError("unknown provenance format")
    found: dict[str, FieldProvenance] = {}
    for written_by, channel, written, verified, mask, *others in raw["p"]:
        entry = FieldProvenance(
            written_by, channel, _at(written), None if verified is None else _at(verified)
        )
        names = [n for code, n in enumerate(FIELD_CODES) if mask >> code & 1]
        for name in names + (others[0] if others else []):
            found[name] = entry
    return found


# -- the per-field table of 0001, until the contract migration drops it ---------------------

LEGACY_FIELDS = Table(
    "resident_fields",
    MetaData(),
    Column("resident_id", String(32), primary_key=True),
    Column("field", String(64), primary_key=True),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("key_version", Integer, nullable=False),
    Column("written_by", String(128), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("written_at", TZDateTime(), nullable=False),
    Column("verified_at", TZDateTime()),
)


def legacy_table_exists(connection: Connection) -> bool:
    """Whether `resident_fields` is still there: one catalogue lookup, no inspector."""
    if connection.dialect.name == "postgresql":
        return bool(connection.scalar(text("SELECT to_regclass('resident_fields') IS NOT NULL")))
    if connection.dialect.name == "sqlite":
        return (
            connection.scalar(
                text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :name"),
                {"name": LEGACY_FIELDS.name},
            )
            is not None
        )
    return bool(connection.dialect.has_table(connection, LEGACY_FIELDS.name))
