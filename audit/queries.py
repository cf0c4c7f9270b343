"""Searching the log: auditors' filters and reports, residents' own entries.

Entries are addressed by their leaf index (what proofs and checkpoints speak of); entries
not yet integrated have none and are listed after the integrated ones.
"""

from __future__ import annotations

import base64
import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, Text, cast, or_, select
from sqlalchemy.orm import Session

from audit.errors import InvalidLogCursor
from audit.models import AuditEntry, AuditLeaf, AuditQueue
from vault.spreadsheet import csv_row

_Q = TypeVar("_Q", bound="Select[*tuple[Any, ...]]")
CHINA = timezone(timedelta(hours=8), "Asia/Shanghai")
WORKING_HOURS = (time(8, 0), time(18, 0))


@dataclass(frozen=True)
class EntryFilter:
    organisation: str | None = None
    client: str | None = None
    user: str | None = None
    resident_id: str | None = None
    field: str | None = None
    purpose: str | None = None
    legal_basis: str | None = None
    outcome: str | None = None
    kind: str | None = None
    action: str | None = None  # exact, or a prefix ending in "*" (e.g. "consent.*")
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class Page:
    items: list[tuple[int | None, AuditEntry]]
    next_cursor: str | None


def _filtered(query: _Q, f: EntryFilter) -> _Q:
    for column, value in (
        (AuditEntry.organisation, f.organisation),
        (AuditEntry.client, f.client),
        (AuditEntry.user, f.user),
        (AuditEntry.resident_id, f.resident_id),
        (AuditEntry.purpose, f.purpose),
        (AuditEntry.legal_basis, f.legal_basis),
        (AuditEntry.outcome, f.outcome),
        (AuditEntry.kind, f.kind),
    ):
        if value is not None:
            query = query.where(column == value)
    if f.action is not None:
        if f.action.endswith("*"):
            prefix = f.action[:-1].replace("%", "").replace("_", "\\_")
            query = query.where(AuditEntry.action.like(prefix + "%", escape="\\"))
        else:
            query = query.where(AuditEntry.action == f.action)
    if f.since is not None:
        query = query.where(AuditEntry.recorded_at >= f.since)
    if f.until is not None:
        query = query.where(AuditEntry.recorded_at < f.until)
    if f.field is not None:
        query = query.where(_has_field(f.field))
    return query


def _has_field(name: str, treatment: str | None = None) -> ColumnElement[bool]:
    """`fields` is JSON text on both databases; match the key (and treatment) textually.

    Names are catalogue identifiers (letters, digits, underscores), so no escaping is needed
    beyond dropping anything else. Both spacings of the serialised JSON are accepted.
    """
    key = _escape(name)
    value = f'"{_escape(treatment)}"' if treatment else ""
    as_text = cast(AuditEntry.fields, Text())
    return or_(as_text.like(f'%"{key}": {value}%'), as_text.like(f'%"{key}":{value}%'))


def _escape(name: str) -> str:
    return "".join(ch for ch in name if ch.isalnum() or ch == "_")


def search(session: Session, f: EntryFilter, *, limit: int = 50, cursor: str | None = None) -> Page:
    """Newest first, paged by leaf index (opaque cursor)."""
    query = _filtered(
        select(AuditLeaf.leaf_index, AuditEntry).join(
            AuditLeaf, AuditLeaf.entry_id == AuditEntry.entry_id
        ),
        f,
    )
    if cursor:
        query = query.where(AuditLeaf.leaf_index < decode_cursor(cursor))
    rows = list(session.execute(query.order_by(AuditLeaf.leaf_index.desc()).limit(limit + 1)))
    items: list[tuple[int | None, AuditEntry]] = [(index, entry) for index, entry in rows[:limit]]
    next_cursor = encode_cursor(rows[limit - 1][0]) if len(rows) > limit else None
    return Page(items, next_cursor)


def pending(session: Session, f: EntryFilter) -> list[AuditEntry]:
    """Entries recorded but not yet integrated (a few seconds' worth, normally)."""
    query = _filtered(
        select(AuditEntry).join(AuditQueue, AuditQueue.entry_id == AuditEntry.entry_id),
        f,
    )
    return list(session.scalars(query.order_by(AuditEntry.recorded_at.desc())))


MAX_LEAF_INDEX = 2**53 - 1  # as the API bounds every index it takes (api/http/params.py)


def encode_cursor(index: int) -> str:
    return base64.urlsafe_b64encode(f"i:{index}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The leaf index a cursor names; `InvalidLogCursor` for one this log never gave out."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("i:"):
            raise ValueError(cursor)
        index = int(raw[2:])
        # No leaf index this log gave out is outside these; a forged 2**63 would overflow
        # SQLite's integers (a 500) rather than be refused.
        if not 0 <= index <= MAX_LEAF_INDEX:
            raise ValueError(cursor)
        return index
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidLogCursor("invalid cursor") from exc


CSV_COLUMNS = (
    "index",
    "recorded_at",
    "kind",
    "action",
    "outcome",
    "channel",
    "subject_type",
    "organisation",
    "client",
    "user",
    "on_behalf_of",
    "purpose",
    "legal_basis",
    "consent_id",
    "resident_id",
    "fields",
    "decision_id",
    "policy_revision",
    "request_id",
    "reason",
)


def entry_summary(index: int | None, entry: AuditEntry) -> dict[str, Any]:
    return {
        "index": index,
        "entry_id": entry.entry_id,
        "recorded_at": entry.recorded_at.isoformat(),
        "kind": entry.kind,
        "action": entry.action,
        "outcome": entry.outcome,
        "channel": entry.channel,
        "subject_type": entry.subject_type,
        "organisation": entry.organisation,
        "client": entry.client,
        "user": entry.user,
        "on_behalf_of": entry.on_behalf_of,
        "purpose": entry.purpose,
        "legal_basis": entry.legal_basis,
        "consent_id": entry.consent_id,
        "resident_id": entry.resident_id,
        "fields": entry.fields,
        "decision_id": entry.decision_id,
        "policy_revision": entry.policy_revision,
        "request_id": entry.request_id,
        "reason": entry.reason,
        "details": entry.details,
    }


def to_csv(items: Sequence[tuple[int | None, AuditEntry]]) -> str:
    """The entries as a CSV for auditors' spreadsheets. Every cell is neutralised: values
    such as a client's `Purpose` header are stored as sent, and one beginning with `=`
    would otherwise run as a formula (`vault.spreadsheet`; JSON stays raw)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(csv_row(CSV_COLUMNS))
    for index, entry in items:
        summary = entry_summary(index, entry)
        summary["fields"] = ";".join(f"{k}={v}" for k, v in sorted(entry.fields.items()))
        writer.writerow(csv_row("" if summary[c] is None else str(summary[c]) for c in CSV_COLUMNS))
    return buffer.getvalue()


# -- reports ----------------------------------------------------------------------------


def accesses_per_day(
    session: Session, f: EntryFilter, by: str = "organisation"
) -> list[dict[str, Any]]:
    """Counts of access entries per (organisation or user) per day, China time."""
    column = AuditEntry.user if by == "user" else AuditEntry.organisation
    counts: dict[tuple[str, str], int] = {}
    query = _filtered(select(column, AuditEntry.recorded_at).where(AuditEntry.kind == "access"), f)
    for who, at in session.execute(query):
        key = (who or "-", at.astimezone(CHINA).date().isoformat())
        counts[key] = counts.get(key, 0) + 1
    return [{by: who, "day": day, "count": n} for (who, day), n in sorted(counts.items())]


def denied_attempts(session: Session, f: EntryFilter) -> list[AuditEntry]:
    query = _filtered(select(AuditEntry).where(AuditEntry.outcome == "denied"), f)
    return list(session.scalars(query.order_by(AuditEntry.recorded_at.desc())))


def sensitive_reads(
    session: Session, f: EntryFilter, sensitive_fields: Sequence[str]
) -> list[AuditEntry]:
    """Allowed reads that returned a sensitive field in clear."""
    query = _filtered(
        select(AuditEntry).where(AuditEntry.kind == "access", AuditEntry.outcome == "allowed"), f
    )
    if sensitive_fields:
        query = query.where(or_(*(_has_field(name, "clear") for name in sensitive_fields)))
    return list(session.scalars(query.order_by(AuditEntry.recorded_at.desc())))


def out_of_hours(session: Session, f: EntryFilter) -> list[AuditEntry]:
    """Accesses outside 08:00-18:00 China time, or on a weekend."""
    query = _filtered(select(AuditEntry).where(AuditEntry.kind == "access"), f)
    start, end = WORKING_HOURS
    found = []
    for entry in session.scalars(query.order_by(AuditEntry.recorded_at.desc())):
        local = entry.recorded_at.astimezone(CHINA)
        if local.weekday() >= 5 or not start <= local.time() < end:
            found.append(entry)
    return found


WORKER_TYPES = ("community_worker", "grid_worker")


def consent_actions(session: Session, f: EntryFilter) -> list[dict[str, Any]]:
    """What workers did with residents' consents, per worker, day (China time) and action:
    assisted grants and revocations at the counter are reported, not only recorded."""
    query = _filtered(
        select(AuditEntry.user, AuditEntry.action, AuditEntry.recorded_at).where(
            AuditEntry.action.like("consent.%"), AuditEntry.subject_type.in_(WORKER_TYPES)
        ),
        f,
    )
    counts: dict[tuple[str, str, str], int] = {}
    for user, action, at in session.execute(query):
        key = (user or "-", at.astimezone(CHINA).date().isoformat(), action)
        counts[key] = counts.get(key, 0) + 1
    return [
        {"user": u, "day": d, "action": a, "count": n} for (u, d, a), n in sorted(counts.items())
    ]
