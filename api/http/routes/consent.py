"""Consent over HTTP: residents' own consents and requests, workers' assisted consent,
organisations' requests, signed receipts and the receipt keys.

The domain lives in `consent`; this module checks who may act on which resident (the
caller's own record, a ward, or a resident within a worker's or organisation's area) and
translates requests; `consent` errors are raised on to `api.http.problems`.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from access.subjects import Access, Subject
from api.http import schemas
from api.http.context import Myself, gate_of, reads_recorded, subject_of
from api.http.params import PURPOSE_PATTERN, PathId
from api.http.problems import problem
from api.oauth.scopes import Scope
from api.oauth.tokens import Principal, require_scopes
from consent import Actor, ConsentNotFound, ConsentService, Grant
from consent.models import ConsentRequest
from consent.receipts import MEDIA_TYPE, jwks
from policies import Decision, RowConstraints
from vault.i18n import Message

router = APIRouter(prefix="/v1", tags=["consent"])

ConsentReader = Annotated[Principal, Depends(require_scopes(Scope.CONSENTS_READ))]
ConsentWriter = Annotated[Principal, Depends(require_scopes(Scope.CONSENTS_WRITE))]
ConsentAsker = Annotated[Principal, Depends(require_scopes(Scope.CONSENTS_REQUEST))]
AnyCaller = Annotated[Principal, Depends(require_scopes())]

MAX_EVIDENCE_BYTES = 5 * 1024 * 1024


def service_of(request: Request) -> ConsentService:
    consents = gate_of(request).consents
    if not isinstance(consents, ConsentService):  # pragma: no cover - wiring error
        raise TypeError("the gate's consent look-up is not a ConsentService")
    return consents


def _invalid(request: Request, field: str, message: str) -> Response:
    return problem(request, "validation-error", errors=[{"field": field, "message": message}])


def _actor(request: Request, subject: Subject, channel: str) -> Actor:
    return Actor(
        name=subject.user or subject.client or "?",
        subject_type=subject.type,
        channel=channel,
        client=subject.client,
        organisation=subject.organisation,
        request_id=request.state.request_id,
    )


def _within(request: Request, subject: Subject, resident_id: str) -> bool:
    """Whether the resident is within the caller's real jurisdiction: the rows the gate
    lets them read under some purpose of their mandate, through the gate's own row filter
    (a grid worker's grids, not their whole community; active residents, no decoys).
    Break-glass purposes reach further, but open one record to read, never its consents."""
    gate = gate_of(request)
    access = Access(subject=subject, purpose=None, request_id=request.state.request_id)
    decisions: dict[RowConstraints, Decision] = {}
    for purpose in sorted(service_of(request).purposes):
        decision = gate.hypothetical(subject, purpose, "read")
        if decision.allow and not decision.obligations.break_glass:
            decisions.setdefault(decision.rows, decision)  # a mandate's purposes share rows
    if not decisions:
        return False
    with gate.runtime.vault.sessions() as session:
        return any(gate.holds(session, access, d, resident_id) for d in decisions.values())


# -- residents ------------------------------------------------------------------------------


class GrantFields(BaseModel):
    """What every grant names, whoever records it."""

    recipient: str = Field(max_length=32)
    purpose: str = Field(max_length=64, pattern=PURPOSE_PATTERN)
    fields: list[str] | None = Field(default=None, max_length=64)
    categories: list[str] | None = Field(default=None, max_length=16)
    separate: bool = False
    expires_at: datetime | None = None
    notice_version: str | None = Field(default=None, max_length=32)
    supersedes: str | None = Field(default=None, max_length=32)


class MyGrant(GrantFields):
    on_behalf_of: str | None = Field(default=None, max_length=32)


@router.get(
    "/me/consents",
    summary="My consents (and my wards'), and the purposes that do "
    "not need my consent, with their legal basis",
    response_model=schemas.MyConsents,
)
def my_consents(request: Request, own: Myself) -> Response:
    subject = own.subject
    service = service_of(request)
    runtime = gate_of(request).runtime
    family = own.family
    with runtime.transaction() as session:
        items = service.consents_of(session, family)
        reads_recorded(request, session, subject, "consents.list", family)
    return JSONResponse({"items": items, "legal_bases": service.legal_bases()})


@router.post(
    "/me/consents",
    status_code=201,
    summary="Give consent (for myself, or for a ward as their guardian with on_behalf_of)",
    response_model=schemas.Consent,
)
def grant_my_consent(request: Request, body: MyGrant, own: Myself) -> Response:
    subject = own.subject
    ward = body.on_behalf_of
    if ward is not None and ward != own.resident_id and ward not in subject.children:
        return problem(request, "not-found", detail="not a ward of yours")
    guardian = ward is not None and ward != own.resident_id
    grant = Grant(
        resident_id=ward if guardian and ward else own.resident_id,
        recipient=body.recipient,
        purpose=body.purpose,
        channel="guardian" if guardian else "self",
        recorded_by=subject.user or "?",
        fields=body.fields,
        categories=body.categories,
        separate=body.separate,
        expires_at=body.expires_at,
        notice_version=body.notice_version,
        guardian_id=own.resident_id if guardian else None,
        supersedes=body.supersedes,
        subject_type=subject.type,
        client=subject.client,
        audit_request_id=request.state.request_id,
    )
    return _granted(request, grant)


def _granted(request: Request, grant: Grant) -> Response:
    service = service_of(request)
    with gate_of(request).runtime.transaction() as session:
        consent = service.grant(session, grant)
        view = service.describe(consent, None)
        receipt = service.receipt(session, consent.id)
        view["receipt_url"] = f"/v1/consents/{consent.id}/receipt"
        view["receipt"] = receipt.jws
    return JSONResponse(view, status_code=201)


@router.post(
    "/me/consents/{consent_id}/revoke",
    summary="Revoke my consent (or a ward's)",
    response_model=schemas.Consent,
)
def revoke_my_consent(request: Request, consent_id: PathId, own: Myself) -> Response:
    subject = own.subject
    service = service_of(request)
    owned = own.family
    with gate_of(request).runtime.transaction() as session:
        consent = service.revoke(session, consent_id, owned, _actor(request, subject, "self"))
        consent_view = service.describe(consent, service.get(session, consent_id)[1])
        consent_view["receipt"] = service.receipt(session, consent_id).jws
    return JSONResponse(consent_view)


@router.get(
    "/me/consent-requests",
    summary="Requests for my consent from organisations",
    response_model=schemas.ConsentRequests,
)
def my_consent_requests(request: Request, own: Myself) -> Response:
    subject = own.subject
    service = service_of(request)
    runtime = gate_of(request).runtime
    family = own.family
    with runtime.transaction() as session:
        rows = service.requests_for(session, family)
        items = [_request_view(service, row) for row in rows]
        reads_recorded(request, session, subject, "consent_requests.list", family)
    return JSONResponse({"items": items})


def _request_view(service: ConsentService, row: ConsentRequest) -> dict[str, Any]:
    spec = service.purposes.get(row.purpose, {})
    return {
        "request_id": row.id,
        "resident_id": row.resident_id,
        "recipient": row.recipient,
        "purpose": row.purpose,
        "purpose_name": spec.get("name"),
        "legal_reference": spec.get("legal_reference"),
        "notice_version": spec.get("notice_version"),
        "fields": list(row.fields),
        "separate": row.separate,
        "message": row.message,
        "status": row.status,
        "requested_at": row.requested_at.isoformat(),
        "answered_at": row.answered_at.isoformat() if row.answered_at else None,
        "consent_id": row.consent_id,
    }


class Answer(BaseModel):
    accept: bool
    expires_at: datetime | None = None
    notice_version: str | None = Field(default=None, max_length=32)


@router.post(
    "/me/consent-requests/{request_id}/answer",
    summary="Answer a request: accept (a consent is recorded) or refuse",
    response_model=schemas.ConsentRequest,
)
def answer_request(request: Request, request_id: PathId, body: Answer, own: Myself) -> Response:
    subject = own.subject
    service = service_of(request)
    owned = own.family
    with gate_of(request).runtime.transaction() as session:
        row = session.get(ConsentRequest, request_id)
        guardian = (
            own.resident_id if row is not None and row.resident_id != own.resident_id else None
        )
        row, consent = service.answer(
            session,
            request_id,
            owned,
            accept=body.accept,
            actor=_actor(request, subject, "guardian" if guardian else "self"),
            guardian_id=guardian,
            expires_at=body.expires_at,
            notice_version=body.notice_version,
        )
        view = _request_view(service, row)
        if consent is not None:
            view["consent"] = service.describe(consent, None)
    return JSONResponse(view)


# -- workers and organisations ------------------------------------------------------------


@router.get(
    "/consents",
    summary="A resident's consents (scope consents:read), within area",
    response_model=schemas.Consents,
)
def resident_consents(
    request: Request,
    principal: ConsentReader,
    resident_id: Annotated[str, Query(max_length=32)],
) -> Response:
    subject = subject_of(request, principal)
    if not _within(request, subject, resident_id):
        return problem(request, "not-found")
    service = service_of(request)
    runtime = gate_of(request).runtime
    with runtime.transaction() as session:
        items = service.consents_of(session, [resident_id])
        reads_recorded(request, session, subject, "consents.list", [resident_id])
    return JSONResponse({"items": items})


class Evidence(BaseModel):
    content_base64: str = Field(max_length=8 * 1024 * 1024)
    media_type: str = Field(default="application/pdf", max_length=100)


class AssistedGrant(GrantFields):
    resident_id: str = Field(max_length=32)
    evidence: Evidence
    witness: str = Field(min_length=1, max_length=128)


@router.post(
    "/consents",
    status_code=201,
    summary="Record assisted consent with the signed form and a witness (scope consents:write)",
    response_model=schemas.Consent,
)
def record_assisted(request: Request, body: AssistedGrant, principal: ConsentWriter) -> Response:
    subject = subject_of(request, principal)
    if not _within(request, subject, body.resident_id):
        return problem(request, "not-found")
    try:
        evidence = base64.b64decode(body.evidence.content_base64, validate=True)
    except (binascii.Error, ValueError):
        return _invalid(request, "evidence.content_base64", "not valid base64")
    if not evidence:
        return _invalid(request, "evidence.content_base64", "empty")
    if len(evidence) > MAX_EVIDENCE_BYTES:
        return problem(request, "payload-too-large")
    grant = Grant(
        resident_id=body.resident_id,
        recipient=body.recipient,
        purpose=body.purpose,
        channel="assisted",
        recorded_by=subject.user or subject.client or "?",
        fields=body.fields,
        categories=body.categories,
        separate=body.separate,
        expires_at=body.expires_at,
        notice_version=body.notice_version,
        supersedes=body.supersedes,
        evidence=evidence,
        evidence_media_type=body.evidence.media_type,
        witness=body.witness,
        subject_type=subject.type,
        client=subject.client,
        audit_request_id=request.state.request_id,
    )
    return _granted(request, grant)


class AssistedRevocation(BaseModel):
    witness: str = Field(min_length=1, max_length=128)


@router.post(
    "/consents/{consent_id}/revoke",
    summary="Revoke a consent at the counter, for "
    "the resident, with a witness (scope consents:write)",
    response_model=schemas.Consent,
)
def revoke_assisted(
    request: Request, consent_id: PathId, body: AssistedRevocation, principal: ConsentWriter
) -> Response:
    """Withdrawing is as easy as giving (PIPL Art. 15): the counter can do both."""
    subject = subject_of(request, principal)
    service = service_of(request)
    with gate_of(request).runtime.transaction() as session:
        consent, _ = service.get(session, consent_id)
        if not _within(request, subject, consent.resident_id):
            raise ConsentNotFound(Message("error.consent.not-found"))
        actor = replace(_actor(request, subject, "assisted"), details={"witness": body.witness})
        revoked = service.revoke(session, consent_id, [consent.resident_id], actor)
        view = service.describe(revoked, service.get(session, consent_id)[1])
        view["receipt"] = service.receipt(session, consent_id).jws
    return JSONResponse(view)


class RequestBody(BaseModel):
    resident_id: str = Field(max_length=64, description="the resident as the caller names them")
    purpose: str = Field(max_length=64, pattern=PURPOSE_PATTERN)
    fields: list[str] | None = Field(default=None, max_length=64)
    separate: bool = True
    message: str | None = Field(default=None, max_length=500)


@router.post(
    "/consent-requests",
    status_code=201,
    summary="Ask a resident for consent (scope consents:request)",
    response_model=schemas.ConsentRequest,
)
def request_consent(request: Request, body: RequestBody, principal: ConsentAsker) -> Response:
    subject = subject_of(request, principal)
    gate = gate_of(request)
    # Organisations name residents by their own pseudonyms, here as everywhere.
    access = Access(subject=subject, purpose=body.purpose, request_id=request.state.request_id)
    given = body.resident_id
    # A purpose outside the caller's mandate is policy's refusal (403), recorded as any is.
    with gate.denials_recorded(access, "consent.request"):
        naming = gate.decide(access, "read")
    resident_id = gate.resolve(access, given) if gate.matches(naming, given) else None
    if subject.organisation is None or resident_id is None:
        return problem(request, "not-found")
    if not _within(request, subject, resident_id):
        return problem(request, "not-found")
    service = service_of(request)
    with gate.runtime.transaction() as session:
        row = service.request(
            session,
            resident_id=resident_id,
            recipient=subject.organisation,
            purpose=body.purpose,
            fields=body.fields,
            separate=body.separate,
            message=body.message,
            actor=_actor(request, subject, "self"),
        )
        view = {**_request_view(service, row), "resident_id": given}
    return JSONResponse(view, status_code=201)


# -- receipts -------------------------------------------------------------------------------


@router.get(
    "/consents/{consent_id}/receipt",
    summary="A consent's signed receipt: compact EdDSA JWS over Kantara receipt fields",
)
def consent_receipt(request: Request, consent_id: PathId, principal: AnyCaller) -> Response:
    subject = subject_of(request, principal)
    service = service_of(request)
    runtime = gate_of(request).runtime
    with runtime.transaction() as session:
        consent, _ = service.get(session, consent_id)  # ConsentNotFound: a 404
        owner = (
            subject.resident_id is not None
            and Scope.ME in principal.scopes
            and (consent.resident_id in (subject.resident_id, *subject.children))
        )
        reader = Scope.CONSENTS_READ in principal.scopes and _within(
            request, subject, consent.resident_id
        )
        if not (owner or reader):
            return problem(request, "not-found")
        token = service.receipt(session, consent_id).jws
        reads_recorded(request, session, subject, "consent.receipt", [consent.resident_id])
    return Response(
        token,
        media_type=MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="consent-{consent_id}.jws"'},
    )


@router.get("/receipt-keys", summary="JWKS of every key that ever signed a consent receipt")
def receipt_keys(request: Request) -> Response:
    with gate_of(request).runtime.vault.sessions() as session:
        keys = jwks(session)
    return JSONResponse(
        keys,
        media_type="application/jwk-set+json",
        headers={"Cache-Control": "public, max-age=300"},
    )
