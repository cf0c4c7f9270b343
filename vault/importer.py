"""CSV import: every row validated, bad rows reported by line, nothing half-imported.

Columns are catalogue field names plus where the resident lives:
`building_id`, `unit`, `room` and optionally `household` (a key local to the file that
groups a household's members; by default one household per room). Empty cells mean
"no value"; list and object fields hold JSON, e.g. `["高血压"]`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from vault.blind_index import digest, normalise_for_index
from vault.db import bulk_insert
from vault.errors import ValidationFailed
from vault.i18n import DEFAULT_LANG, Message
from vault.models import BlindIndexEntry, Building, Household, Room, new_id, utcnow
from vault.services import NewResident, Provenance, ResidentStore

STRUCTURE_COLUMNS = ("building_id", "unit", "room", "household")
_JSON_TYPES = frozenset({"list", "object"})


@dataclass(frozen=True)
class RowError:
    """One cell's (or column's) problem, by line: what to tell the operator as a message."""

    line: int
    column: str
    detail: Message

    def message(self, lang: str = DEFAULT_LANG) -> str:
        return self.detail.text(lang)


@dataclass
class ImportReport:
    rows: int = 0
    imported: int = 0
    households: int = 0
    errors: list[RowError] = field(default_factory=list)
    # (resident id, fields written) for each imported resident, for the caller's audit entries
    created: list[tuple[str, list[str]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class _Row:
    line: int
    values: dict[str, Any]
    building_id: str
    unit: str
    room: str
    household: str


def _cells(
    store: ResidentStore, line: int, raw: dict[str, str], report: ImportReport
) -> _Row | None:
    values: dict[str, Any] = {}
    ok = True
    for column, cell in raw.items():
        if column in STRUCTURE_COLUMNS or cell is None or cell.strip() == "":
            continue
        spec = store.catalogue[column]
        if spec.type in _JSON_TYPES:
            try:
                values[column] = json.loads(cell)
            except ValueError:
                report.errors.append(RowError(line, column, Message("import.not-json")))
                ok = False
        else:
            values[column] = cell
    missing = [c for c in ("building_id", "unit", "room") if not (raw.get(c) or "").strip()]
    for column in missing:
        report.errors.append(RowError(line, column, Message("import.required")))
    if missing or not ok:
        return None
    unit, room = raw["unit"].strip(), raw["room"].strip()
    building_id = raw["building_id"].strip()
    household = (raw.get("household") or "").strip() or f"{building_id}/{unit}/{room}"
    return _Row(line, values, building_id, unit, room, household)


def read_rows(store: ResidentStore, path: Path, report: ImportReport) -> Iterator[_Row]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        unknown = [c for c in header if c not in STRUCTURE_COLUMNS and c not in store.catalogue]
        for column in unknown:
            report.errors.append(RowError(1, column, Message("import.unknown-column")))
        if unknown:
            return
        line = 1
        for raw in reader:
            report.rows += 1
            row = _cells(store, line + 1, raw, report)
            line = reader.line_num
            if row is not None:
                yield row


def import_csv(
    session: Session,
    store: ResidentStore,
    path: Path,
    provenance: Provenance,
    *,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Validate every row; if all pass (and not a dry run), insert all.

    The inserts run in the caller's transaction, so the caller's rollback undoes them all.
    """
    report = ImportReport()
    valid: list[tuple[_Row, dict[str, Any]]] = []
    for row in read_rows(store, path, report):
        try:
            valid.append((row, store.validate(row.values)))
        except ValidationFailed as failed:
            report.errors += [RowError(row.line, p.field, p.detail) for p in failed.problems]
        if progress:
            progress(1)
    _check_buildings(session, valid, report)
    _check_duplicates(session, store, valid, report)
    if report.errors or dry_run:
        return report
    households = _households(session, valid)
    report.households = len(set(households.values()))
    ids = store.create_many(
        session,
        [NewResident(values, households[row.household]) for row, values in valid],
        provenance,
    )
    report.imported = len(ids)
    report.created = [(rid, sorted(values)) for rid, (_, values) in zip(ids, valid, strict=True)]
    return report


def _check_buildings(
    session: Session, valid: Iterable[tuple[_Row, dict[str, Any]]], report: ImportReport
) -> None:
    rows = list(valid)
    known = set(
        session.scalars(
            select(Building.id).where(Building.id.in_({row.building_id for row, _ in rows}))
        )
    )
    for row, _ in rows:
        if row.building_id not in known:
            report.errors.append(
                RowError(row.line, "building_id", Message("import.no-such-building"))
            )


def _check_duplicates(
    session: Session,
    store: ResidentStore,
    valid: list[tuple[_Row, dict[str, Any]]],
    report: ImportReport,
) -> None:
    """A unique identifier (ID number) may appear once in the file and not already be stored."""
    unique_fields = [s for s in store.catalogue.searchable if s.validator == "gb11643"]
    for spec in unique_fields:
        seen: dict[bytes, int] = {}
        for row, values in valid:
            if spec.name not in values:
                continue
            mac = digest(store.keyring, spec, normalise_for_index(spec, str(values[spec.name])))
            if mac in seen:
                report.errors.append(
                    RowError(row.line, spec.name, Message("import.duplicate", {"line": seen[mac]}))
                )
            seen[mac] = row.line
        existing = set()
        macs = list(seen)
        for start in range(0, len(macs), 500):
            existing |= set(
                session.scalars(
                    select(BlindIndexEntry.digest).where(
                        BlindIndexEntry.field == spec.name,
                        BlindIndexEntry.digest.in_(macs[start : start + 500]),
                    )
                )
            )
        for mac in existing:
            report.errors.append(RowError(seen[mac], spec.name, Message("import.already-stored")))
    report.errors.sort(key=lambda e: e.line)


def _households(session: Session, valid: list[tuple[_Row, dict[str, Any]]]) -> dict[str, str]:
    """Find or create the rooms, and create one household per file-local household key."""
    building_ids = {row.building_id for row, _ in valid}
    rooms: dict[tuple[str, str, str], str] = {
        (r.building_id, r.unit, r.number): r.id
        for r in session.scalars(select(Room).where(Room.building_id.in_(building_ids)))
    }
    new_rooms: list[dict[str, Any]] = []
    new_households: list[dict[str, Any]] = []
    households: dict[str, str] = {}
    now = utcnow()
    for row, _ in valid:
        if row.household in households:
            continue
        place = (row.building_id, row.unit, row.room)
        if place not in rooms:
            rooms[place] = new_id("rm")
            new_rooms.append(
                {
                    "id": rooms[place],
                    "building_id": row.building_id,
                    "unit": row.unit,
                    "number": row.room,
                }
            )
        households[row.household] = new_id("hh")
        new_households.append(
            {"id": households[row.household], "room_id": rooms[place], "created_at": now}
        )
    # COPY on PostgreSQL: a community's import is a few thousand rooms and households.
    bulk_insert(session, cast(Table, Room.__table__), new_rooms)
    bulk_insert(session, cast(Table, Household.__table__), new_households)
    return households
