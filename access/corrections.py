"""Correction requests: a resident asks, the worker's queue holds it, a worker handles it.

The API has no route for this yet, so the pages call this small service directly; it goes
through the gate all the same. The person is the verified token's subject (built by
`access.subjects`, as every route does), values are sealed under the resident's data key, and
every step (asked, listed, opened, handled) is an audit entry committed before the answer.

A worker handles corrections under their record-keeping purpose (`PURPOSES`), with the very
decision a read of that field would get: the decision's rows (jurisdiction: the grid, not
just the community), its consent requirement and the field's treatment. A request the
worker could not read is not in their queue, and opening or resolving it answers "not
found" exactly as a request that does not exist; both refusals are recorded as the gate
records its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from access.errors import GateError, NotInScope
from access.gate import FieldView, Gate
from access.models import CorrectionRequest
from access.reads import record_reads
from access.runtime import Runtime
from access.subjects import Access, Caller, Subject, subject_for
from audit import EntryDraft
from policies import Decision
from vault.crypto import open_field, seal_field
from vault.models import Building, Household, Resident, Room, new_id, utcnow

MAX_VALUE = 500
MAX_NOTE = 1000
QUEUE_LIMIT = 200
# The purpose a worker's correction handling runs under: their type's record-keeping
# service, the one registered purpose that lets them read and write records in their area
# (policies/vault/data.json). Correcting a record is record maintenance, not a visit.
PURPOSES: Final = {"grid_worker": "grid-service", "community_worker": "counter-service"}
LISTED, OPENED, RESOLVED = "correction.listed", "correction.opened", "correction.resolved"


class CorrectionError(Exception):
    """A refusal the pages show. `refusal` is the gate's own error when the whole decision
    refused (suspended, rate limited, outside the mandate): it names no request, so saying
    so leaks nothing; a refusal about one request is always `not-found`."""

    def __init__(self, key: str, refusal: GateError | None = None) -> None:
        super().__init__(key)
        self.key = key
        self.refusal = refusal


@dataclass(frozen=True)
class Actor:
    subject: Subject
    request_id: str


def actor_for(runtime: Runtime, principal: Caller, request_id: str) -> Actor:
    with runtime.vault.sessions() as session:
        return Actor(subject_for(session, principal), request_id)


def _aad(request_id: str) -> str:
    return f"correction:{request_id}"


def _entry(actor: Actor, action: str, row: CorrectionRequest, treatment: str) -> EntryDraft:
    return actor.subject.entry(
        action,
        "allowed",
        channel="web",
        kind="event",
        resident_id=row.resident_id,
        fields={row.field: treatment},
        request_id=actor.request_id,
        details={"correction": row.id},
    )


def request_correction(
    runtime: Runtime, actor: Actor, *, resident_id: str, field: str, value: str, note: str
) -> str:
    """File a request for the resident themself or a ward; returns its id."""
    subject = actor.subject
    if subject.resident_id is None or resident_id not in (subject.resident_id, *subject.children):
        raise CorrectionError("not-found")
    if field not in runtime.vault.store.catalogue:
        raise CorrectionError("unknown-field")
    value, note = value.strip(), note.strip()
    if not value or len(value) > MAX_VALUE or len(note) > MAX_NOTE:
        raise CorrectionError("invalid")
    with runtime.transaction() as session:
        row = session.execute(
            select(Resident, Building.community_id)
            .join(Household, Household.id == Resident.household_id)
            .join(Room, Room.id == Household.room_id)
            .join(Building, Building.id == Room.building_id)
            .where(Resident.id == resident_id, Resident.status == "active")
        ).first()
        if row is None:
            raise CorrectionError("not-found")
        resident, community = row
        key = runtime.vault.store.data_keys.get(session, resident.id, resident.key_version)
        request = CorrectionRequest(
            id=new_id("cr"),
            resident_id=resident.id,
            community_id=community,
            field=field,
            key_version=resident.key_version,
            requested_by=subject.user or "?",
            channel="self" if resident_id == subject.resident_id else "guardian",
            status="pending",
            requested_at=utcnow(),
            sealed=b"",
        )
        plain = json.dumps({"value": value, "note": note}, ensure_ascii=False).encode()
        request.sealed = seal_field(key, _aad(request.id), plain)
        session.add(request)
        session.flush()
        runtime.audit.record(session, [_entry(actor, "correction.requested", request, "proposed")])
        return request.id


def _summary(row: CorrectionRequest) -> dict[str, Any]:
    return {
        "id": row.id,
        "resident_id": row.resident_id,
        "field": row.field,
        "status": row.status,
        "channel": row.channel,
        "requested_at": row.requested_at,
        "resolved_at": row.resolved_at,
    }


def _access(actor: Actor, purpose: str | None) -> Access:
    return Access(
        subject=actor.subject, purpose=purpose, request_id=actor.request_id, channel="web"
    )


def _decided(gate: Gate, access: Access, action: str, target: str = "other") -> Decision:
    """The request's one decision, as a read of resident data gets it; a refusal is
    recorded under `action` by the gate before it is raised."""
    try:
        with gate.denials_recorded(access, action):
            return gate.decide(access, "read", target)
    except GateError as error:
        raise CorrectionError("refused", error) from None


def _listed(
    gate: Gate,
    session: Session,
    access: Access,
    decision: Decision,
    rows: list[CorrectionRequest],
) -> list[CorrectionRequest]:
    """The rows a read under `decision` would let out, with one listing entry per resident
    (the fields named, no values), recorded in `session` before anything is returned."""
    views = gate.field_views(session, access, decision, [(r.resident_id, r.field) for r in rows])
    shown = [r for r in rows if (r.resident_id, r.field) in views]
    per_resident: dict[str, list[CorrectionRequest]] = {}
    for row in shown:
        per_resident.setdefault(row.resident_id, []).append(row)
    gate.runtime.audit.record(
        session,
        [
            gate.access_entry(
                access,
                LISTED,
                decision,
                resident_id=rid,
                fields=dict.fromkeys((r.field for r in listed), "listed"),
                cover=views[rid, listed[0].field].cover,
                details={"corrections": [r.id for r in listed]},
            )
            for rid, listed in per_resident.items()
        ],
    )
    return shown


def mine(gate: Gate, actor: Actor) -> list[dict[str, Any]]:
    """A resident's own requests (and their wards'), without the values; recorded as the
    resident's reads of their own record (and as a guardian's of a ward's)."""
    subject = actor.subject
    if subject.resident_id is None:
        return []
    access = _access(actor, None)
    targets = {"self": [subject.resident_id], "child": list(subject.children)}
    decisions = {t: _decided(gate, access, LISTED, t) for t, ids in targets.items() if ids}
    shown: list[CorrectionRequest] = []
    with gate.runtime.transaction() as session:
        for target, decision in decisions.items():
            rows = session.scalars(
                select(CorrectionRequest)
                .where(CorrectionRequest.resident_id.in_(targets[target]))
                .order_by(CorrectionRequest.requested_at.desc())
                .limit(50)
            ).all()
            shown.extend(_listed(gate, session, access, decision, list(rows)))
        shown.sort(key=lambda r: r.requested_at, reverse=True)
        # The form names the resident and each ward even with no request on file.
        listed = {r.resident_id for r in shown[:50]}
        record_reads(
            gate.runtime,
            session,
            subject=subject,
            request_id=actor.request_id,
            action="correction.form",
            channel="web",
            resident_ids=[r for ids in targets.values() for r in ids if r not in listed],
        )
        return [_summary(r) for r in shown[:50]]


def queue(gate: Gate, actor: Actor) -> list[dict[str, Any]]:
    """The requests the worker could read, pending first, newest first; no values."""
    access = _access(actor, PURPOSES.get(actor.subject.type))
    decision = _decided(gate, access, LISTED)
    with gate.runtime.transaction() as session:
        # Narrowed in SQL first so the limit counts only rows that can be shown; the gate's
        # field_views (in _listed) has the last word.
        rows = session.scalars(
            select(CorrectionRequest)
            .where(
                CorrectionRequest.resident_id.in_(gate.scoped_ids(access, decision)),
                CorrectionRequest.field.in_(decision.visible_fields),
            )
            .order_by(CorrectionRequest.status.desc(), CorrectionRequest.requested_at.desc())
            .limit(QUEUE_LIMIT)
        ).all()
        return [_summary(r) for r in _listed(gate, session, access, decision, list(rows))]


def _handled(
    gate: Gate, session: Session, access: Access, decision: Decision, request_id: str
) -> tuple[CorrectionRequest, FieldView]:
    """The request and how a read would show its field; NotInScope when there is none,
    whatever the gate raises when the worker could not read it."""
    row = session.get(CorrectionRequest, request_id)
    if row is None:
        raise NotInScope(decision, decision_id=access.decision_id)
    return row, gate.field_view(session, access, decision, row.resident_id, row.field)


def _refused(
    gate: Gate, access: Access, action: str, error: GateError, request_id: str
) -> CorrectionError:
    """Record the refusal (naming the resident, so they see the attempt too), after the
    refused transaction is gone; the page says "not found" whatever the reason."""
    with gate.runtime.vault.sessions() as session:
        resident_id = session.scalar(
            select(CorrectionRequest.resident_id).where(CorrectionRequest.id == request_id)
        )
    gate.record_denial(access, error, action, resident_id)
    return CorrectionError("not-found")


def open_request(gate: Gate, actor: Actor, request_id: str) -> dict[str, Any]:
    """The proposed value, shown as a read of that field would show it, and the note
    (only when the field is in clear: a note may repeat the value); audited."""
    access = _access(actor, PURPOSES.get(actor.subject.type))
    decision = _decided(gate, access, OPENED)
    try:
        with gate.runtime.transaction() as session:
            row, view = _handled(gate, session, access, decision, request_id)
            key = gate.runtime.vault.store.data_keys.get(session, row.resident_id, row.key_version)
            plain = json.loads(open_field(key, _aad(row.id), row.sealed))
            clear = view.treatment == "clear"
            gate.runtime.audit.record(
                session,
                [
                    gate.access_entry(
                        access,
                        OPENED,
                        decision,
                        resident_id=row.resident_id,
                        fields={row.field: view.treatment},
                        cover=view.cover,
                        details={"correction": row.id, "note": "shown" if clear else "withheld"},
                    )
                ],
            )
            return {
                **_summary(row),
                "treatment": view.treatment,
                "value": gate.render_field(decision, view, plain["value"]),
                "note": plain["note"] if clear else None,
                "note_withheld": not clear,
            }
    except GateError as error:
        raise _refused(gate, access, OPENED, error, request_id) from None


def resolve(gate: Gate, actor: Actor, request_id: str) -> None:
    access = _access(actor, PURPOSES.get(actor.subject.type))
    decision = _decided(gate, access, RESOLVED)
    try:
        with gate.runtime.transaction() as session:
            row, view = _handled(gate, session, access, decision, request_id)
            if row.status == "pending":
                row.status = "resolved"
                row.resolved_at = utcnow()
                row.resolved_by = actor.subject.user
                entry = gate.access_entry(
                    access,
                    RESOLVED,
                    decision,
                    resident_id=row.resident_id,
                    fields={row.field: "handled"},
                    cover=view.cover,
                    details={"correction": row.id},
                )
                # Handling shows no value: an event, as the request itself is.
                gate.runtime.audit.record(session, [replace(entry, kind="event")])
    except GateError as error:
        raise _refused(gate, access, RESOLVED, error, request_id) from None
