"""The record of every bulk export, kept so a leaked file can be traced back to it.

One row per `GET /v1/exports/residents`: who asked (organisation, client, user), the
request and decision ids, purpose, format and filters, how many rows went out and how many
residents were left out for lack of consent, and the decoys it included with their marks
(keyed digests of their cells). No secret is stored: an export's fingerprint secret is
re-derived from the keyring and the export id (`access.exports.fingerprints`). No personal value is
stored either: decoys are fictional, and their marks are keyed digests.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Boolean, Integer, String, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from access.exports.fingerprints import (
    FINGERPRINT_VERSION,
    ExportKey,
    Fingerprint,
    cell_text,
    column_order,
    csv_header,
    csv_line,
    fingerprint_master,
    mark_key,
    ndjson_line,
    row_marks,
)
from access.views import EVERYWHERE, Place
from vault.models import Base, TZDateTime, utcnow
from vault.spreadsheet import csv_row

if TYPE_CHECKING:
    from access.gate import Gate
    from access.subjects import Access
    from policies import Decision

__all__ = [
    "ExportRecord",
    "ExportStart",
    "OpenExport",
    "complete_export",
    "new_export_id",
    "open_export",
    "start_export",
]


class ExportRecord(Base):
    __tablename__ = "exports"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow, index=True)
    completed_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    state: Mapped[str] = mapped_column(String(16))  # running | complete
    subject_type: Mapped[str] = mapped_column(String(32))
    organisation: Mapped[str | None] = mapped_column(String(64), index=True)
    client: Mapped[str | None] = mapped_column(String(64))
    user: Mapped[str | None] = mapped_column(String(128))
    # Whose pseudonyms the rows carry (an organisation, or `client:<id>`), and whether they do.
    recipient: Mapped[str] = mapped_column(String(128))
    pseudonymous: Mapped[bool] = mapped_column(Boolean)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    decision_id: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str | None] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(16))
    filters: Mapped[dict[str, Any]] = mapped_column(JSON)
    rows: Mapped[int] = mapped_column(Integer, default=0)
    left_out: Mapped[int] = mapped_column(Integer, default=0)
    decoys: Mapped[list[str]] = mapped_column(JSON)  # vault ids of the fictional people
    decoy_marks: Mapped[dict[str, list[str]]] = mapped_column(JSON)
    fingerprint_version: Mapped[int] = mapped_column(Integer)


def new_export_id() -> str:
    return f"exp_{uuid.uuid4().hex}"


@dataclass(frozen=True)
class ExportStart:
    """Who asked for an export, and what; written before its first row is sent."""

    export_id: str
    subject_type: str
    organisation: str | None
    client: str | None
    user: str | None
    recipient: str
    pseudonymous: bool
    request_id: str
    decision_id: str
    purpose: str | None
    format: str
    filters: dict[str, Any]
    decoys: list[str]
    decoy_marks: dict[str, list[str]]


def start_export(session: Session, start: ExportStart) -> None:
    session.add(
        ExportRecord(
            id=start.export_id,
            state="running",
            subject_type=start.subject_type,
            organisation=start.organisation,
            client=start.client,
            user=start.user,
            recipient=start.recipient,
            pseudonymous=start.pseudonymous,
            request_id=start.request_id[:64],
            decision_id=start.decision_id,
            purpose=start.purpose,
            format=start.format,
            filters=start.filters,
            rows=0,
            left_out=0,
            decoys=start.decoys,
            decoy_marks=start.decoy_marks,
            fingerprint_version=FINGERPRINT_VERSION,
        )
    )


def complete_export(session: Session, export_id: str, rows: int, left_out: int) -> None:
    session.execute(
        update(ExportRecord)
        .where(ExportRecord.id == export_id)
        .values(state="complete", rows=rows, left_out=left_out, completed_at=utcnow())
    )


def find_export(session: Session, export_id: str) -> ExportRecord | None:
    return session.get(ExportRecord, export_id[:40])


def all_exports(session: Session) -> list[ExportRecord]:
    return list(session.scalars(select(ExportRecord).order_by(ExportRecord.created_at)))


# -- one export, end to end ---------------------------------------------------------------


@dataclass
class OpenExport:
    export_id: str
    decision: Decision
    lines: Iterator[str]  # the file, line by line; each batch audited before it is read


def open_export(
    gate: Gate,
    access: Access,
    *,
    format: str,
    place: Place = EVERYWHERE,
    requested: Sequence[str] | None = None,
    fingerprinted: bool = True,
) -> OpenExport:
    """Decide, plan the rows and decoys, record the export, and return its lines (lazy).

    Raises the gate's errors (after auditing them). `fingerprinted=False` is the plain
    export of before (id order, no decoys, no record): benchmarks compare the two."""
    export_id = new_export_id()
    master = fingerprint_master(gate.runtime.vault.keyring)
    fingerprint = Fingerprint(export_id, ExportKey.derive(master, export_id))
    decision, batches, summary = gate.export(
        access,
        place=place,
        requested=requested,
        fingerprint=fingerprint if fingerprinted else None,
    )
    key = fingerprint.key if fingerprinted else None
    if fingerprinted:
        marks = mark_key(master)
        subject = access.subject
        start = ExportStart(
            export_id=export_id,
            subject_type=subject.type,
            organisation=subject.organisation,
            client=subject.client,
            user=subject.user,
            recipient=gate.recipient(subject),
            pseudonymous=decision.pseudonymous,
            request_id=access.request_id,
            decision_id=access.decision_id,
            purpose=access.purpose,
            format=format,
            filters={
                "community": place.community,
                "grid": place.grid,
                "building": place.building,
                "fields": list(requested) if requested else None,
            },
            decoys=list(fingerprint.decoys),
            decoy_marks={
                vault_id: sorted(row_marks(marks, view.resident_id, view.fields))
                for vault_id, view in zip(fingerprint.decoys, fingerprint.decoy_views, strict=True)
            },
        )
        with gate.runtime.transaction() as session:
            start_export(session, start)

    def lines() -> Iterator[str]:
        columns: list[str] | None = None
        for batch in batches:
            for view in batch:
                if columns is None:  # the export's keyed column order
                    columns = (
                        column_order(key, list(view.treatments)) if key else [*view.treatments]
                    )
                    if format == "csv":
                        yield csv_header(csv_row(["resident_id", *columns]))
                if format == "ndjson":
                    record = {
                        "resident_id": view.resident_id,
                        "fields": {n: view.fields[n] for n in columns if n in view.fields},
                        "treatments": {
                            n: view.treatments[n] for n in columns if n in view.treatments
                        },
                    }
                    yield ndjson_line(record, key)
                    continue
                # Neutralised before csv_line keys its quoting, so the bit is keyed on the
                # text as written; decoy marks stay digests of the raw values.
                cells = [view.resident_id, *(cell_text(view.fields.get(n)) for n in columns)]
                yield csv_line(csv_row(cells), key)
        if fingerprinted:
            with gate.runtime.transaction() as session:
                complete_export(session, export_id, summary["rows"], summary["left_out"])

    return OpenExport(export_id, decision, lines())
