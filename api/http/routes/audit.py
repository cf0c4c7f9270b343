"""Public audit endpoints: checkpoints, proofs and the verifier key (docs/api.md, "Checkpoints").

These need no token: anyone may check that the log is consistent. Entries themselves are
served only to auditors and to the resident they concern (with the access gate).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from access.runtime import Runtime
from access.subjects import subject_for
from api.http import schemas
from api.http.context import reads_recorded, runtime_of
from api.http.params import (
    MAX_INTEGER,
    USER_LENGTH,
    Index,
    PathCode,
    PathId,
    QueryCode,
    QueryCursor,
    QueryUser,
)
from api.http.problems import problem
from api.oauth.scopes import Scope
from api.oauth.tokens import Principal, require_scopes
from audit import EntryDraft
from audit.detection import (
    LIFT_REASON_MAX,
    Detector,
    active_suspensions,
    is_suspended,
    lift_suspension,
)
from audit.models import AuditAlert, AuditCheckpoint
from audit.queries import (
    EntryFilter,
    accesses_per_day,
    consent_actions,
    denied_attempts,
    entry_summary,
    out_of_hours,
    search,
    sensitive_reads,
    to_csv,
)

router = APIRouter(prefix="/v1/audit", tags=["audit log"])


def _b64(hashes: list[bytes]) -> list[str]:
    return [base64.b64encode(h).decode() for h in hashes]


@router.get("/checkpoint", response_class=PlainTextResponse)
def latest_checkpoint(request: Request) -> Response:
    """The latest signed tree head, as a C2SP checkpoint (text/plain)."""
    runtime = runtime_of(request)
    with runtime.vault.sessions() as session:
        head = runtime.audit.latest_checkpoint(session)
    if head is None:
        return problem(request, "not-found", detail="no checkpoint has been signed yet")
    return PlainTextResponse(head.checkpoint)


@router.get("/checkpoints", response_model=schemas.SignedHeads)
def checkpoints(
    request: Request,
    since: int = Query(default=0, ge=0, le=MAX_INTEGER, description="smallest tree size to list"),
    limit: int = Query(default=100, ge=1, le=1000),
) -> dict[str, Any]:
    """Tree-head history: each checkpoint with the (unsigned) time it was signed."""
    runtime = runtime_of(request)
    with runtime.vault.sessions() as session:
        heads = session.scalars(
            select(AuditCheckpoint)
            .where(AuditCheckpoint.tree_size >= since)
            .order_by(AuditCheckpoint.tree_size)
            .limit(limit)
        ).all()
    return {
        "items": [
            {
                "checkpoint": h.checkpoint,
                "tree_size": h.tree_size,
                "signed_at": h.signed_at.isoformat(),
            }
            for h in heads
        ]
    }


@router.get("/proofs/inclusion", response_model=schemas.InclusionProof)
def inclusion(
    request: Request,
    index: int = Query(ge=0, le=MAX_INTEGER),
    tree_size: int = Query(ge=1, le=MAX_INTEGER),
) -> dict[str, Any]:
    """Proof that entry `index` is in the tree of size `tree_size`."""
    log = runtime_of(request).audit
    hashes = _proof(request, lambda session: log.inclusion_proof(session, index, tree_size))
    return {"index": index, "tree_size": tree_size, "hashes": hashes}


@router.get("/proofs/consistency", response_model=schemas.ConsistencyProof)
def consistency(
    request: Request,
    first: int = Query(ge=1, le=MAX_INTEGER),
    second: int = Query(ge=1, le=MAX_INTEGER),
) -> dict[str, Any]:
    """Proof that the tree of size `first` is a prefix of the tree of size `second`."""
    log = runtime_of(request).audit
    hashes = _proof(request, lambda session: log.consistency_proof(session, first, second))
    return {"first": first, "second": second, "hashes": hashes}


def _proof(request: Request, prove: Callable[[Session], list[bytes]]) -> list[str]:
    """A proof's hashes, base64 as the tlog clients read them."""
    with runtime_of(request).vault.sessions() as session:
        return _b64(prove(session))


@router.get("/public-key", response_class=PlainTextResponse)
def public_key(request: Request) -> PlainTextResponse:
    """The log's verifier key: `<origin>+<key id hex>+<base64(0x01 || public key)>`."""
    return PlainTextResponse(runtime_of(request).audit.verifier_key + "\n")


# -- entries: auditors, and residents for entries about themselves ---------------------------


def _record_search(
    runtime: Runtime,
    session: Session,
    request: Request,
    principal: Principal,
    action: str,
    wanted: EntryFilter,
    **details: str,
) -> None:
    """Who searched the log, and for what, is itself on the record, in the transaction
    that read it: the entries an auditor reads name residents, so reading them is an
    access too (one entry per search, not one per resident the page happens to show)."""
    searched = {k: str(v) for k, v in vars(wanted).items() if v is not None}
    runtime.audit.record(
        session,
        [
            EntryDraft(
                action=action,
                outcome="allowed",
                channel="api",
                kind="event",
                subject_type="auditor",
                user=principal.username,
                client=principal.client_id,
                request_id=request.state.request_id,
                details={**searched, **details},
            )
        ],
    )


@router.get(
    "/entries", summary="Search the log (scope audit:read)", response_model=schemas.EntryPage
)
def entries(
    request: Request,
    principal: Annotated[Principal, Depends(require_scopes(Scope.AUDIT_READ))],
    organisation: QueryCode = None,
    client: QueryCode = None,
    user: QueryUser = None,
    resident_id: QueryCode = None,
    field: QueryCode = None,
    purpose: QueryCode = None,
    legal_basis: QueryCode = None,
    outcome: Annotated[str | None, Query(max_length=16)] = None,
    action: Annotated[str | None, Query(max_length=64, description="exact, or prefix*")] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: QueryCursor = None,
) -> Response:
    runtime = runtime_of(request)
    wanted = EntryFilter(
        organisation=organisation,
        client=client,
        user=user,
        resident_id=resident_id,
        field=field,
        purpose=purpose,
        legal_basis=legal_basis,
        outcome=outcome,
        action=action,
        since=since,
        until=until,
    )
    with runtime.transaction() as session:
        page = search(session, wanted, limit=limit, cursor=cursor)  # InvalidLogCursor: a 422
        _record_search(runtime, session, request, principal, "audit.search", wanted)
    if format == "csv":
        return Response(
            to_csv(page.items),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="audit.csv"'},
        )
    return JSONResponse(
        {"items": [entry_summary(i, e) for i, e in page.items], "next_cursor": page.next_cursor}
    )


@router.get(
    "/entries/{index}",
    summary="One entry with its canonical bytes (audit:read, or the resident it concerns)",
    response_model=schemas.Entry,
)
def entry(
    request: Request,
    index: Index,
    principal: Annotated[Principal, Depends(require_scopes())],
) -> Response:
    runtime = runtime_of(request)
    with runtime.transaction() as session:
        found = runtime.audit.entry_at(session, index)
        subject = subject_for(session, principal) if principal.username is not None else None
        auditor = Scope.AUDIT_READ in principal.scopes
        own = (
            Scope.ME in principal.scopes
            and found is not None
            and subject is not None
            and subject.resident_id is not None
            and found.resident_id == subject.resident_id
        )
        if found is None or not (auditor or own):
            return problem(request, "not-found")
        if auditor:
            _record_search(
                runtime,
                session,
                request,
                principal,
                "audit.entry_read",
                EntryFilter(resident_id=found.resident_id),
                index=str(index),
            )
        elif subject is not None:
            reads_recorded(request, session, subject, "me.access_entry", [found.resident_id])
    body = entry_summary(index, found)
    body["canonical"] = base64.b64encode(found.canonical).decode()
    return JSONResponse(body)


REPORTS = ("accesses-per-day", "denied", "sensitive-reads", "out-of-hours", "consent-actions")


@router.get(
    "/reports/{report}",
    summary="Auditors' reports (scope audit:read)",
    response_model=schemas.Report,
)
def report(
    request: Request,
    report: PathCode,
    principal: Annotated[Principal, Depends(require_scopes(Scope.AUDIT_READ))],
    organisation: QueryCode = None,
    user: QueryUser = None,
    since: datetime | None = None,
    until: datetime | None = None,
    by: Annotated[str, Query(pattern="^(organisation|user)$")] = "organisation",
) -> Response:
    """accesses-per-day (by organisation or user, China time), denied attempts, reads of
    sensitive fields in clear, and accesses outside 08:00-18:00 or at weekends."""
    if report not in REPORTS:
        return problem(request, "not-found", detail=f"reports: {', '.join(REPORTS)}")
    runtime = runtime_of(request)
    wanted = EntryFilter(organisation=organisation, user=user, since=since, until=until)
    with runtime.transaction() as session:
        _record_search(runtime, session, request, principal, "audit.report", wanted, report=report)
        if report == "accesses-per-day":
            return JSONResponse({"items": accesses_per_day(session, wanted, by=by)})
        if report == "consent-actions":
            return JSONResponse({"items": consent_actions(session, wanted)})
        if report == "denied":
            found = denied_attempts(session, wanted)
        elif report == "sensitive-reads":
            sensitive = [s.name for s in runtime.vault.store.catalogue if s.sensitive]
            found = sensitive_reads(session, wanted, sensitive)
        else:
            found = out_of_hours(session, wanted)
        return JSONResponse(
            {"items": [entry_summary(None, e) for e in found[:1000]], "total": len(found)}
        )


# -- insider-abuse alerts -------------------------------------------------------------------


def _alert_view(alert: AuditAlert, suspended: bool) -> dict[str, Any]:
    return {
        "alert_id": alert.id,
        "kind": alert.kind,
        "actor": alert.actor,
        "actor_kind": alert.actor_kind,
        "organisation": alert.organisation,
        "window_start": alert.window_start.isoformat(),
        "window_end": alert.window_end.isoformat(),
        "observed": alert.observed,
        "threshold": alert.threshold,
        "details": alert.details,
        "status": alert.status,
        "created_at": alert.created_at.isoformat(),
        "reviewed_by": alert.reviewed_by,
        "suspended": suspended,
    }


@router.get(
    "/alerts", summary="Insider-abuse alerts (scope audit:read)", response_model=schemas.Alerts
)
def list_alerts(
    request: Request,
    principal: Annotated[Principal, Depends(require_scopes(Scope.AUDIT_READ))],
    status: Annotated[str, Query(pattern="^(open|confirmed|dismissed|all)$")] = "open",
) -> Response:
    runtime = runtime_of(request)
    with runtime.vault.sessions() as session:
        query = select(AuditAlert).order_by(AuditAlert.created_at.desc()).limit(500)
        if status != "all":
            query = query.where(AuditAlert.status == status)
        items = [
            _alert_view(alert, is_suspended(session, alert.actor, alert.actor))
            for alert in session.scalars(query)
        ]
    return JSONResponse({"items": items})


class AlertReview(BaseModel):
    outcome: Literal["confirmed", "dismissed"]
    lift_suspension: bool = False
    reason: str | None = Field(default=None, max_length=LIFT_REASON_MAX)


@router.post(
    "/alerts/{alert_id}/review",
    summary="Confirm or dismiss an alert, and lift the actor's suspension (scope audit:read)",
    response_model=schemas.Alert,
)
def review_alert(
    request: Request,
    alert_id: PathId,
    body: AlertReview,
    principal: Annotated[Principal, Depends(require_scopes(Scope.AUDIT_READ))],
) -> Response:
    runtime = runtime_of(request)
    detector: Detector = request.app.state.detector
    reviewer = principal.username or principal.client_id
    with runtime.transaction() as session:
        # LiftRefused (409, or 422 without a reason) is answered by api.http.problems.
        alert = detector.review(
            session, alert_id, reviewer, body.outcome, body.lift_suspension, reason=body.reason
        )
        if alert is None:
            return problem(request, "not-found")
        view = _alert_view(alert, is_suspended(session, alert.actor, alert.actor))
    return JSONResponse(view)


@router.get(
    "/suspensions",
    summary="Actors suspended pending review (scope audit:read)",
    response_model=schemas.Suspensions,
)
def list_suspensions(
    request: Request,
    principal: Annotated[Principal, Depends(require_scopes(Scope.AUDIT_READ))],
) -> Response:
    runtime = runtime_of(request)
    with runtime.vault.sessions() as session:
        items = [
            {
                "suspension_id": s.id,
                "actor": s.actor,
                "actor_kind": s.actor_kind,
                "alert_id": s.alert_id,
                "reason": s.reason,
                "created_at": s.created_at.isoformat(),
            }
            for s in active_suspensions(session)
        ]
    return JSONResponse({"items": items})


class SuspensionLift(BaseModel):
    reason: str = Field(max_length=LIFT_REASON_MAX)


@router.post(
    "/suspensions/{actor}/lift",
    summary="Lift an actor's suspension, with a reason the log keeps (scope audit:read)",
    response_model=schemas.Lifted,
)
def lift_actor(
    request: Request,
    actor: Annotated[str, PathParam(max_length=USER_LENGTH)],
    body: SuspensionLift,
    principal: Annotated[Principal, Depends(require_scopes(Scope.AUDIT_READ))],
) -> Response:
    runtime = runtime_of(request)
    reviewer = principal.username or principal.client_id
    with runtime.transaction() as session:
        lifted = lift_suspension(
            session, runtime.audit, actor, lifted_by=reviewer, reason=body.reason
        )
    return JSONResponse({"actor": actor, "lifted": [s.id for s in lifted], "suspended": False})
