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

from api.gate import Access, GateError
from api.oauth.scopes import Scope
from api.oauth.tokens import Principal, require_scopes
from api.problems import problem
from api.routes_residents import gate_of, refusal, subject_of
from audit.models import AuditEntry
from consent.breakglass import BreakGlassError, Opener, notifications_of
from consent.models import BreakGlassGrant

router = APIRouter(prefix="/v1", tags=["break-glass"])

Reader = Annotated[Principal, Depends(require_scopes(Scope.RESIDENTS_READ))]
Auditor = Annotated[Principal, Depends(require_scopes(Scope.AUDIT_READ))]
Me = Annotated[Principal, Depends(require_scopes(Scope.ME))]

WORKERS = ("grid_worker", "community_worker")


class OpenBody(BaseModel):
    resident_id: str = Field(max_length=64)
    # Or the `Justification` header (API.md: percent-encoded UTF-8); one of them is needed.
    justification: str | None = Field(default=None, max_length=2000)
    purpose: str = Field(default="emergency-rescue", max_length=64)
    minutes: int | None = Field(default=None, ge=1, le=240)


def _lang(request: Request) -> str:
    return "en" if request.headers.get("accept-language", "").lower().startswith("en") else "zh"


def _grant_view(grant: BreakGlassGrant, accesses: int | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "grant_id": grant.id, "worker": grant.user, "subject_type": grant.subject_type,
        "organisation": grant.organisation, "resident_id": grant.resident_id,
        "purpose": grant.purpose, "justification": grant.justification,
        "created_at": grant.created_at.isoformat(), "expires_at": grant.expires_at.isoformat(),
        "review_status": grant.review_status, "reviewed_by": grant.reviewed_by,
        "reviewed_at": grant.reviewed_at.isoformat() if grant.reviewed_at else None,
        "review_note": grant.review_note,
    }  # fmt: skip
    if accesses is not None:
        view["accesses"] = accesses
    return view


@router.post("/break-glass", status_code=201, summary="Open an emergency (break-glass) grant "
             "for one resident, with a written justification (workers)")  # fmt: skip
def open_grant(
    request: Request,
    body: OpenBody,
    principal: Reader,
    justification: Annotated[str | None, Header(max_length=6000)] = None,
) -> Response:
    gate = gate_of(request)
    reason = body.justification or (unquote(justification) if justification else "")
    subject = subject_of(request, principal)
    access = Access(subject=subject, purpose=body.purpose, request_id=request.state.request_id)
    if subject.type not in WORKERS or subject.user is None:
        return problem(request, "policy-denied", detail="break-glass is for community and "
                       "grid workers", status=403)  # fmt: skip
    try:
        with gate.denials_recorded(access, "break-glass", body.resident_id):
            decision = gate.decide(access, "read")
            if not decision.obligations.break_glass:
                return problem(request, "validation-error", errors=[
                    {"field": "purpose", "message": "not a break-glass purpose"}])  # fmt: skip
    except GateError as error:
        return refusal(request, access, error)
    opener = Opener(
        user=subject.user, subject_type=subject.type, organisation=subject.organisation,
        request_id=request.state.request_id,
    )  # fmt: skip
    try:
        with gate.runtime.transaction() as session:
            grant = gate.break_glass.open(
                session, opener, body.resident_id, purpose=body.purpose,
                justification=reason, minutes=body.minutes,
            )  # fmt: skip
            view = _grant_view(grant)
    except BreakGlassError as error:
        message = error.message(_lang(request))
        field = error.field or "resident_id"
        return problem(request, error.slug, errors=[{"field": field, "message": message}])
    return JSONResponse(view, status_code=201, headers={"Decision-Id": access.decision_id})


@router.get("/audit/break-glass", summary="Break-glass grants for review (scope audit:read)")
def review_queue(
    request: Request,
    principal: Auditor,
    status: Literal["pending", "justified", "unjustified", "all"] = "pending",
) -> Response:
    gate = gate_of(request)
    with gate.runtime.vault.sessions() as session:
        grants = gate.break_glass.queue(session, None if status == "all" else status)
        items = []
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
    return JSONResponse({"items": items})


class ReviewBody(BaseModel):
    outcome: Literal["justified", "unjustified"]
    note: str | None = Field(default=None, max_length=2000)


@router.post("/audit/break-glass/{grant_id}/review",
             summary="Mark a break-glass access justified or not (scope audit:read)")  # fmt: skip
def review_grant(request: Request, grant_id: str, body: ReviewBody, principal: Auditor) -> Response:
    gate = gate_of(request)
    reviewer = principal.username or principal.client_id
    try:
        with gate.runtime.transaction() as session:
            grant = gate.break_glass.review(session, grant_id, reviewer, body.outcome, body.note)
            view = _grant_view(grant)
    except BreakGlassError as error:
        slug = "not-found" if "no such" in error.en else "conflict"
        return problem(request, slug, detail=error.message(_lang(request)))
    return JSONResponse(view)


@router.get("/me/notifications", summary="What I have been told: emergency accesses and the like")
def my_notifications(request: Request, principal: Me) -> Response:
    subject = subject_of(request, principal)
    if subject.resident_id is None:
        return problem(request, "insufficient-scope", detail="only residents", status=403)
    lang = _lang(request)
    with gate_of(request).runtime.vault.sessions() as session:
        rows = notifications_of(session, [subject.resident_id, *subject.children])
        items = [
            {
                "notification_id": n.id, "resident_id": n.resident_id, "kind": n.kind,
                "text": n.text_en if lang == "en" else n.text_zh, "reference": n.reference,
                "created_at": n.created_at.isoformat(),
            }
            for n in rows
        ]  # fmt: skip
    return JSONResponse({"items": items})
