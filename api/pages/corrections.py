"""Correction requests: a resident asks, the community's queue holds it, a worker handles it.

The API has no route for this yet, so the pages call this small service directly; it
follows the gate's rules all the same: the person is the verified token's subject (built
by `api.subjects`, as every route does), values are sealed under the resident's data key,
and every step (asked, opened, handled) is an audit entry committed with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from sqlalchemy import select

from api.gate import Subject
from api.oauth.tokens import InvalidToken, Principal
from api.pages.core import PageSession, SignedOut
from api.pages.models import CorrectionRequest
from api.runtime import Runtime
from api.subjects import subject_for
from audit import EntryDraft
from vault.crypto import open_field, seal_field
from vault.models import Building, Household, Resident, Room, new_id, utcnow

MAX_VALUE = 500
MAX_NOTE = 1000


class CorrectionError(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


@dataclass(frozen=True)
class Actor:
    subject: Subject
    request_id: str


def actor_for(runtime: Runtime, principal: Principal, request_id: str) -> Actor:
    with runtime.vault.sessions() as session:
        return Actor(subject_for(session, principal), request_id)


def session_actor(request: Request, page: PageSession) -> Actor:
    """The signed-in person of a page session, as the gate would see them; SignedOut when
    the session's token no longer verifies. Sync: run it in the threadpool."""
    try:
        principal = request.app.state.token_verifier.verify(page.access_token or "")
    except InvalidToken:
        raise SignedOut from None
    runtime: Runtime = request.app.state.runtime
    return actor_for(runtime, principal, request.state.request_id)


def _aad(request_id: str) -> str:
    return f"correction:{request_id}"


def _entry(actor: Actor, action: str, row: CorrectionRequest, treatment: str) -> EntryDraft:
    subject = actor.subject
    return EntryDraft(
        action=action, outcome="allowed", channel="web",
        kind="access" if action == "correction.opened" else "event",
        subject_type=subject.type, organisation=subject.organisation, client=subject.client,
        user=subject.user, resident_id=row.resident_id, fields={row.field: treatment},
        request_id=actor.request_id, details={"correction": row.id},
    )  # fmt: skip


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
            id=new_id("cr"), resident_id=resident.id, community_id=community, field=field,
            key_version=resident.key_version, requested_by=subject.user or "?",
            channel="self" if resident_id == subject.resident_id else "guardian",
            status="pending", requested_at=utcnow(), sealed=b"",
        )  # fmt: skip
        plain = json.dumps({"value": value, "note": note}, ensure_ascii=False).encode()
        request.sealed = seal_field(key, _aad(request.id), plain)
        session.add(request)
        session.flush()
        runtime.audit.record(session, [_entry(actor, "correction.requested", request, "proposed")])
        return request.id


def _summary(row: CorrectionRequest) -> dict[str, Any]:
    return {
        "id": row.id, "resident_id": row.resident_id, "field": row.field,
        "status": row.status, "channel": row.channel, "requested_at": row.requested_at,
        "resolved_at": row.resolved_at,
    }  # fmt: skip


def mine(runtime: Runtime, actor: Actor) -> list[dict[str, Any]]:
    """A resident's own requests (and their wards'), without the values."""
    subject = actor.subject
    if subject.resident_id is None:
        return []
    with runtime.vault.sessions() as session:
        rows = session.scalars(
            select(CorrectionRequest)
            .where(CorrectionRequest.resident_id.in_([subject.resident_id, *subject.children]))
            .order_by(CorrectionRequest.requested_at.desc())
            .limit(50)
        ).all()
        return [_summary(r) for r in rows]


def _serves(subject: Subject, row: CorrectionRequest) -> bool:
    return subject.type in ("grid_worker", "community_worker") and (
        row.community_id in subject.communities
    )


def queue(runtime: Runtime, actor: Actor) -> list[dict[str, Any]]:
    """The queue of the worker's community: pending first, newest first; no values."""
    subject = actor.subject
    if subject.type not in ("grid_worker", "community_worker") or not subject.communities:
        return []
    with runtime.vault.sessions() as session:
        rows = session.scalars(
            select(CorrectionRequest)
            .where(CorrectionRequest.community_id.in_(list(subject.communities)))
            .order_by(CorrectionRequest.status.desc(), CorrectionRequest.requested_at.desc())
            .limit(200)
        ).all()
        return [_summary(r) for r in rows]


def open_request(runtime: Runtime, actor: Actor, request_id: str) -> dict[str, Any]:
    """The proposed value and note, decrypted for a worker of that community; audited."""
    with runtime.transaction() as session:
        row = session.get(CorrectionRequest, request_id)
        if row is None or not _serves(actor.subject, row):
            raise CorrectionError("not-found")
        key = runtime.vault.store.data_keys.get(session, row.resident_id, row.key_version)
        plain = json.loads(open_field(key, _aad(row.id), row.sealed))
        runtime.audit.record(session, [_entry(actor, "correction.opened", row, "clear")])
        return {**_summary(row), "value": plain["value"], "note": plain["note"]}


def resolve(runtime: Runtime, actor: Actor, request_id: str) -> None:
    with runtime.transaction() as session:
        row = session.get(CorrectionRequest, request_id)
        if row is None or not _serves(actor.subject, row):
            raise CorrectionError("not-found")
        if row.status == "pending":
            row.status = "resolved"
            row.resolved_at = utcnow()
            row.resolved_by = actor.subject.user
            runtime.audit.record(session, [_entry(actor, "correction.resolved", row, "handled")])
