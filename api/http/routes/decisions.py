"""Explanations: why a request was allowed or refused, who can see a field, and why.

Every explanation is the policy's own answer put into words (`policies.explain`):
hypothetical requests are evaluated by the same engine as real ones, past decisions are
read back from the evaluation recorded in the signed audit log, and a resident's dry run
goes through the gate's own read planning, so none of them can differ from what a real
request gets.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from access.gate import EVALUATION_ACTION, Gate, Visibility
from access.subjects import Access, Subject, organisation_subject, visibility_subjects
from api.http import schemas
from api.http.context import Myself, gate_of, subject_of
from api.http.params import PURPOSE_PATTERN, PathId
from api.http.problems import lang_of, problem
from api.oauth.scopes import Scope
from api.oauth.tokens import Principal, require_scopes
from audit.models import AuditEntry
from policies import Decision
from policies.explain import Explainer
from vault.i18n import Message
from vault.models import Building, Household, Organisation, Resident, Room

router = APIRouter(prefix="/v1", tags=["explanations"])

Anyone = Annotated[Principal, Depends(require_scopes())]
Auditor = Annotated[Principal, Depends(require_scopes(Scope.AUDIT_READ))]

ACTIONS = ("read", "list", "search", "export", "write")


def explainer_of(request: Request) -> Explainer:
    explainer: Explainer = request.app.state.explainer
    return explainer


class ExplainBody(BaseModel):
    purpose: str | None = Field(default=None, max_length=64, pattern=PURPOSE_PATTERN)
    action: Literal["read", "list", "search", "export", "write"] = "read"
    fields: list[str] | None = Field(default=None, max_length=64)
    organisation: str | None = Field(
        default=None, max_length=64, description="auditors only: explain for this organisation"
    )


@router.post(
    "/decisions/explain",
    summary="Explain a request before making it: why it is "
    "allowed or refused, each field's treatment and what would change it",
    response_model=schemas.Explanation,
)
def explain_request(request: Request, body: ExplainBody, principal: Anyone) -> Response:
    gate = gate_of(request)
    if body.organisation is not None:
        if Scope.AUDIT_READ not in principal.scopes:
            return problem(
                request,
                "insufficient-scope",
                detail="explaining for another organisation needs audit:read",
                status=403,
            )
        with gate.runtime.vault.sessions() as session:
            if session.get(Organisation, body.organisation) is None:
                return problem(request, "not-found")
            subject = organisation_subject(session, body.organisation)
    else:
        subject = subject_of(request, principal)
    unknown = [f for f in body.fields or () if f not in gate.catalogue]
    if unknown:
        return problem(
            request,
            "validation-error",
            errors=[{"field": "fields", "message": f"unknown field {name}"} for name in unknown],
        )
    decision = gate.hypothetical(subject, body.purpose, body.action)
    explained = explainer_of(request).explain(
        decision,
        purpose=body.purpose,
        action=body.action,
        lang=lang_of(request),
        fields=body.fields,
    )
    explained["subject"] = {"type": subject.type, "organisation": subject.organisation}
    return JSONResponse(explained, headers={"Policy-Revision": decision.revision})


@router.get(
    "/decisions/{decision_id}",
    summary="Explain a past decision, from the evaluation "
    "recorded in the audit log (the caller it concerns, or audit:read)",
    response_model=schemas.PastDecision,
)
def explain_past(request: Request, decision_id: PathId, principal: Anyone) -> Response:
    gate = gate_of(request)
    with gate.runtime.vault.sessions() as session:
        entries = list(
            session.scalars(
                select(AuditEntry)
                .where(AuditEntry.decision_id == decision_id[:64], AuditEntry.kind == "access")
                .limit(500)
            )
        )
        mine = [e for e in entries if _concerns(principal, e)]
        if not entries or not (mine or Scope.AUDIT_READ in principal.scopes):
            return problem(request, "not-found")  # the same whether absent or not yours
        first = entries[0]
        evaluation = (
            session.scalars(
                select(AuditEntry).where(
                    AuditEntry.evaluation_id == first.evaluation_id,
                    AuditEntry.action == EVALUATION_ACTION,
                )
            ).first()
            if first.evaluation_id
            else None
        )
    lang = lang_of(request)
    body: dict[str, Any] = {
        "decision_id": decision_id,
        "recorded": {
            "action": first.action,
            "outcome": first.outcome,
            "reason": first.reason,
            "purpose": first.purpose,
            "legal_basis": first.legal_basis,
            "organisation": first.organisation,
            "policy_revision": first.policy_revision,
            "evaluation_id": first.evaluation_id,
            "entries": len(entries),
            "recorded_at": first.recorded_at.isoformat(),
        },
    }
    if evaluation is not None and first.evaluation_id is not None:
        evaluation_id = first.evaluation_id
        result = evaluation.details.get("result")
        decision = Decision.from_result(
            result, revision=evaluation.policy_revision or "", evaluation_id=evaluation_id
        )
        body["explanation"] = explainer_of(request).explain(
            decision, purpose=first.purpose, action=first.action, lang=lang
        )
        body["evaluation_entry"] = evaluation.entry_id
    else:
        # A refusal before policy was asked (no purpose, say) has no evaluation to read.
        body["explanation"] = None
    if first.reason in {"consent-required", "not-found"}:
        body["refused_by"] = first.reason  # the gate's own checks after policy allowed
    return JSONResponse(body)


def _concerns(principal: Principal, entry: AuditEntry) -> bool:
    if principal.username is not None:
        return entry.user == principal.username
    return entry.client == principal.client_id


# -- a resident's dry run -----------------------------------------------------------------------


def _community_of(gate: Gate, resident_id: str) -> str | None:
    with gate.runtime.vault.sessions() as session:
        return session.scalars(
            select(Building.community_id)
            .join(Room, Room.building_id == Building.id)
            .join(Household, Household.room_id == Room.id)
            .join(Resident, Resident.household_id == Household.id)
            .where(Resident.id == resident_id)
        ).first()


def _who(
    explainer: Explainer, subject: Subject, names: dict[str, str], lang: str
) -> dict[str, Any]:
    who: dict[str, Any] = {
        "type": subject.type,
        "type_name": explainer.subject_type(subject.type, lang),
        "organisation": subject.organisation,
        "organisation_name": names.get(subject.organisation or "", subject.organisation),
    }
    if subject.user:
        who["worker"] = subject.user  # a person: by role and login (badge) name
    return who


def visibility_view(
    explainer: Explainer, found: list[Visibility], names: dict[str, str], lang: str
) -> dict[str, Any]:
    """The dry run grouped two ways: by who-and-purpose, and by field."""
    combinations = []
    by_field: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for seen in found:
        who = _who(explainer, seen.subject, names, lang)
        basis = seen.decision.rows.legal_basis
        shown = {n: t for n, t in seen.treatments.items() if t != "denied"}
        fields = []
        for name, treatment in sorted(shown.items()):
            line = explainer.field_lines(seen.decision, name, lang, seen.purpose)
            line["treatment"] = treatment  # narrowed by the resident's consents
            fields.append(line)
            by_field[name].append(
                {
                    "who": who,
                    "purpose": seen.purpose,
                    "purpose_name": explainer.purpose_name(seen.purpose, lang),
                    "treatment": treatment,
                    "legal_basis": basis,
                    "legal_basis_text": explainer.legal_basis(basis, lang),
                }
            )
        combinations.append(
            {
                "who": who,
                "purpose": seen.purpose,
                "purpose_name": explainer.purpose_name(seen.purpose, lang),
                "legal_basis": basis,
                "legal_basis_text": explainer.legal_basis(basis, lang),
                "status": seen.status,
                "identifier": seen.decision.identifier,
                "treatments": seen.treatments,
                "fields": fields,
                "summary": _status_text(seen.status, lang),
            }
        )
    return {
        "combinations": combinations,
        "fields": {
            name: {"label": explainer.field_label(name, lang), "seen_by": seen_by}
            for name, seen_by in sorted(by_field.items())
        },
    }


_STATUS_TEXTS: Final[dict[str, Message]] = {
    "allowed": Message("visibility.status.allowed"),
    "consented": Message("visibility.status.consented"),
    "needs-consent": Message("visibility.status.needs-consent"),
    "break-glass": Message("visibility.status.break-glass"),
}


def _status_text(status: str, lang: str) -> str:
    found = _STATUS_TEXTS.get(status)
    return found.text(lang) if found is not None else status  # a new status shows its code


def organisation_names(gate: Gate, lang: str) -> dict[str, str]:
    with gate.runtime.vault.sessions() as session:
        return {
            o.id: (o.name_en if lang == "en" else o.name_zh)
            for o in session.scalars(select(Organisation))
        }


@router.get(
    "/me/visibility",
    summary="Who can see each of my fields, and why (a dry run of "
    "every organisation and worker x purpose against my record and consents)",
    response_model=schemas.MyVisibility,
)
def my_visibility(request: Request, own: Myself) -> Response:
    subject = own.subject
    gate = gate_of(request)
    access = Access(subject=subject, purpose=None, request_id=request.state.request_id)
    purposes = sorted(explainer_of(request).purposes)
    with gate.runtime.vault.sessions() as session:
        subjects = visibility_subjects(session, _community_of(gate, own.resident_id))
    found = gate.visibility(access, own.resident_id, subjects, purposes)
    lang = lang_of(request)
    body = visibility_view(explainer_of(request), found, organisation_names(gate, lang), lang)
    return JSONResponse({"resident_id": own.resident_id, **body})


# -- what an organisation sees (auditors, policy authors) ----------------------------------------


@router.get(
    "/organisations/{organisation}/visibility",
    summary="What an organisation sees: "
    "every purpose x action with each field's treatment and the deciding rules "
    "(scope audit:read)",
    response_model=schemas.OrganisationVisibility,
)
def organisation_visibility(request: Request, organisation: PathId, principal: Auditor) -> Response:
    gate = gate_of(request)
    explainer = explainer_of(request)
    with gate.runtime.vault.sessions() as session:
        if session.get(Organisation, organisation[:64]) is None:
            return problem(request, "not-found")
        subject = organisation_subject(session, organisation)
    lang = lang_of(request)
    rows = []
    for purpose in sorted(explainer.purposes):
        for action in ACTIONS:
            decision = gate.hypothetical(subject, purpose, action)
            rows.append(
                {
                    "purpose": purpose,
                    "purpose_name": explainer.purpose_name(purpose, lang),
                    "action": action,
                    "allowed": decision.allow,
                    "reason": {"code": decision.reason.code, "text": decision.reason.text(lang)},
                    "rules": list(decision.rules),
                    "consent_required": decision.rows.consent_required,
                    "identifier": decision.identifier,
                    "fields": {
                        n: str(t) for n, t in sorted(decision.fields.items()) if str(t) != "denied"
                    },
                }
            )
    return JSONResponse(
        {"organisation": organisation, "type": subject.type, "items": rows},
        headers={"Policy-Revision": gate.engine.revision},
    )
