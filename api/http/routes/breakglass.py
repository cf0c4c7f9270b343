"""Break-glass over HTTP: a worker opens an emergency grant, the resident is told, an
auditor reviews it. The reads themselves go through the gate like any other
(`GET /v1/residents/{id}` with `Purpose: emergency-rescue`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import unquote

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from access.errors import PolicyDenied
from access.subjects import Access, Subject
from api.http import schemas
from api.http.context import Myself, gate_of, reads_recorded, subject_of
from api.http.params import PURPOSE_PATTERN, PathId
from api.http.problems import lang_of, problem
from api.oauth.scopes import Scope
from api.oauth.tokens import Principal, require_scopes
from audit.models import AuditEntry
from consent.breakglass import Named, Opener, notifications_of
from consent.models import BreakGlassGrant
from vault.i18n import Message
from vault.pseudonyms import is_pseudonym

router = APIRouter(prefix="/v1", tags=["break-glass"])

Reader = Annotated[Principal, Depends(require_scopes(Scope.RESIDENTS_READ))]
Auditor = Annotated[Principal, Depends(require_scopes(Scope.AUDIT_READ))]

WORKERS = ("grid_worker", "community_worker")
RESIDENT_ID_LENGTH = 32  # the audit log's resident_id column; every vault id fits


class OpenBody(BaseModel):
    resident_id: str = Field(max_length=64)
    # Or the `Justification` header (docs/api.md: percent-encoded UTF-8); one of them is needed.
    justification: str | None = Field(default=None, max_length=2000)
    purpose: str = Field(default="emergency-rescue", max_length=64, pattern=PURPOSE_PATTERN)
    minutes: int | None = Field(default=None, ge=1, le=240)


def _grant_view(grant: BreakGlassGrant, accesses: int | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "grant_id": grant.id,
        "worker": grant.user,
        "subject_type": grant.subject_type,
        "organisation": grant.organisation,
        "resident_id": grant.resident_id,
        "purpose": grant.purpose,
        "justification": grant.justification,
        "created_at": grant.created_at.isoformat(),
        "expires_at": grant.expires_at.isoformat(),
        "review_status": grant.review_status,
        "reviewed_by": grant.reviewed_by,
        "reviewed_at": grant.reviewed_at.isoformat() if grant.reviewed_at else None,
        "review_note": grant.review_note,
    }
    if accesses is not None:
        view["accesses"] = accesses
    return view


@router.post(
    "/break-glass",
    status_code=201,
    summary="Open an emergency (break-glass) grant "
    "for one resident, with a written justification (workers)",
    response_model=schemas.Grant,
)
def open_grant(
    request: Request,
    body: OpenBody,
    principal: Reader,
    justification: Annotated[str | None, Header(max_length=6000)] = None,
) -> Response:
    """The same answer whether or not the id names a resident the worker may reach: 201
    with a grant. Only a reachable resident's grant is stored (and the resident told);
    any other opens nothing, and every read still goes through the gate. Both attempts
    are on the record."""
    gate = gate_of(request)
    reason = body.justification or (unquote(justification) if justification else "")
    subject = subject_of(request, principal)
    access = Access(subject=subject, purpose=body.purpose, request_id=request.state.request_id)
    given = body.resident_id
    if subject.type not in WORKERS or subject.user is None:
        # Refused before policy is asked: no decision, so no Decision-Id to answer with.
        error = PolicyDenied(Message("error.break-glass.workers-only"))
        gate.record_denial(access, error, "break-glass", _recordable(given))
        raise error
    with gate.denials_recorded(access, "break-glass", _recordable(given)):
        decision = gate.decide(access, "read")
        if not decision.obligations.break_glass:
            return problem(
                request,
                "validation-error",
                errors=[{"field": "purpose", "message": "not a break-glass purpose"}],
            )
    opener = Opener(
        user=subject.user,
        subject_type=subject.type,
        organisation=subject.organisation,
        request_id=request.state.request_id,
    )
    with gate.runtime.transaction() as session:
        # Whom the id names, as a read would find them: the caller's kind of id, within
        # the decision's rows (for break-glass every active resident; never a decoy).
        resident_id = gate.resolve(access, given)
        reachable = (
            resident_id is not None
            and gate.matches(decision, given)
            and gate.holds(session, access, decision, resident_id)
        )
        # A BreakGlassError names only the request's own fields: nothing about the resident.
        grant = gate.break_glass.open(
            session,
            opener,
            Named(given, resident_id, reachable),
            purpose=body.purpose,
            justification=reason,
            minutes=body.minutes,
        )
        view = _grant_view(grant)
    return JSONResponse(view, status_code=201, headers={"Decision-Id": access.decision_id})


def _recordable(given: str) -> str | None:
    """The id as given, for `Gate.record_denial`: a pseudonym (kept bounded there), or
    what could be a vault id; anything longer than one names no resident."""
    return given if is_pseudonym(given) or len(given) <= RESIDENT_ID_LENGTH else None


@router.get(
    "/audit/break-glass",
    summary="Break-glass grants for review (scope audit:read)",
    response_model=schemas.Grants,
)
def review_queue(
    request: Request,
    principal: Auditor,
    status: Literal["pending", "justified", "unjustified", "all"] = "pending",
) -> Response:
    gate = gate_of(request)
    with gate.runtime.transaction() as session:
        grants = gate.break_glass.queue(session, None if status == "all" else status)
        items = []
        concerned: dict[str, list[str]] = {}
        for grant in grants:
            accesses = session.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(
                    AuditEntry.user == grant.user,
                    AuditEntry.resident_id == grant.resident_id,
                    AuditEntry.purpose == grant.purpose,
                    AuditEntry.action == "read",
                    AuditEntry.recorded_at >= grant.created_at,
                    AuditEntry.recorded_at <= grant.expires_at,
                )
            )
            items.append(_grant_view(grant, int(accesses or 0)))
            concerned.setdefault(grant.resident_id, []).append(grant.id)
        # The queue names residents and what befell them (the justification): a read of each.
        auditor = Subject(type="auditor", user=principal.username, client=principal.client_id)
        reads_recorded(request, session, auditor, "break_glass.queue", concerned, items=concerned)
    return JSONResponse({"items": items})


class ReviewBody(BaseModel):
    outcome: Literal["justified", "unjustified"]
    note: str | None = Field(default=None, max_length=2000)


@router.post(
    "/audit/break-glass/{grant_id}/review",
    summary="Mark a break-glass access justified or not (scope audit:read)",
    response_model=schemas.Grant,
)
def review_grant(
    request: Request, grant_id: PathId, body: ReviewBody, principal: Auditor
) -> Response:
    gate = gate_of(request)
    reviewer = principal.username or principal.client_id
    with gate.runtime.transaction() as session:
        # BreakGlassNotFound (404) or BreakGlassConflict (409, already reviewed).
        grant = gate.break_glass.review(
            session,
            grant_id,
            reviewer,
            body.outcome,
            body.note,
            request_id=request.state.request_id,
        )
        view = _grant_view(grant)
    return JSONResponse(view)


@router.get(
    "/me/notifications",
    summary="What I have been told: emergency accesses and the like",
    response_model=schemas.Notifications,
)
def my_notifications(request: Request, own: Myself) -> Response:
    subject = own.subject
    lang = lang_of(request)
    concerned: dict[str, list[str]] = {own.resident_id: [], **{c: [] for c in subject.children}}
    runtime = gate_of(request).runtime
    with runtime.transaction() as session:
        rows = notifications_of(session, list(concerned))
        items = [
            {
                "notification_id": n.id,
                "resident_id": n.resident_id,
                "kind": n.kind,
                "text": n.text_en if lang == "en" else n.text_zh,
                "reference": n.reference,
                "created_at": n.created_at.isoformat(),
            }
            for n in rows
        ]
        for n in rows:
            concerned[n.resident_id].append(n.id)
        # A guardian reads their wards' notifications too: each resident's on the record.
        reads_recorded(request, session, subject, "notifications.list", concerned, items=concerned)
    return JSONResponse({"items": items})
