"""Reads of resident-linked records that are not field values: consents, consent requests,
receipts, notifications, correction requests, break-glass grants, audit reports.

Each is an access like a read of a field (ARCHITECTURE.md, "Record"): one entry per
(request, resident), written in the transaction that read the records, so it is committed
before the answer leaves. The entry names the kind of record read, never its content.
`tests/test_reads_audited.py` walks every route and page and holds each to this.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy.orm import Session

from access.runtime import Runtime
from access.subjects import Subject

LISTED_ITEMS = 100  # ids named in one entry's details, beside their count


def record_reads(
    runtime: Runtime,
    session: Session,
    *,
    subject: Subject,
    request_id: str,
    action: str,
    resident_ids: Iterable[str | None],
    channel: str = "api",
    purpose: str | None = None,
    items: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """Record that `subject` read `action`'s records of each resident (once per resident,
    in the order first seen). Nothing is recorded for an answer that names nobody.
    `items` names the records shown per resident (grant or notification ids), kept in the
    entry's details with their count."""
    seen = dict.fromkeys(r for r in resident_ids if r)
    listed = items or {}
    runtime.audit.record(
        session,
        [
            subject.entry(
                action,
                "allowed",
                channel=channel,
                kind="access",
                purpose=purpose,
                resident_id=resident_id,
                request_id=request_id,
                details={
                    "items": list(listed[resident_id])[:LISTED_ITEMS],
                    "count": len(listed[resident_id]),
                }
                if resident_id in listed
                else {},
            )
            for resident_id in seen
        ],
    )
