"""What a route takes from the app and the request: the gate, who is asking, the access
they make, and the audit entries of what they read. Every route of `api.http.routes`
reaches these the same way, so none rebuilds them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from access.errors import NotAResident
from access.gate import Gate
from access.reads import record_reads
from access.runtime import Runtime
from access.subjects import Access, Subject
from access.views import RecordView
from api.http.params import declared_justification, declared_purpose
from api.oauth.scopes import Scope
from api.oauth.tokens import Principal, require_scopes
from policies import Decision


def gate_of(request: Request) -> Gate:
    gate: Gate = request.app.state.gate
    return gate


def runtime_of(request: Request) -> Runtime:
    return gate_of(request).runtime


def subject_of(request: Request, principal: Principal) -> Subject:
    """Who is asking, as policy sees them (token + database, kept under the change stamp)."""
    return gate_of(request).subjects.of(principal)


def access_of(
    request: Request, principal: Principal, purpose: str | None, justification: str | None = None
) -> Access:
    """The access a request makes: its subject, its declared purpose (the `Purpose` header
    or `?purpose=`, checked against the contract's format) and its justification."""
    return Access(
        subject=subject_of(request, principal),
        purpose=declared_purpose(request, purpose),
        request_id=request.state.request_id,
        justification=declared_justification(justification),
    )


Me = Annotated[Principal, Depends(require_scopes(Scope.ME))]


@dataclass(frozen=True)
class Own:
    """A resident asking about their own records (and their wards', as their guardian)."""

    subject: Subject
    resident_id: str
    request_id: str

    @property
    def family(self) -> list[str]:
        """The resident and their wards: whose records are theirs to see."""
        return [self.resident_id, *self.subject.children]

    def access(self, purpose: str | None = None) -> Access:
        return Access(subject=self.subject, purpose=purpose, request_id=self.request_id)


def _own(request: Request, principal: Me) -> Own:
    subject = subject_of(request, principal)
    if subject.resident_id is None:
        raise NotAResident
    return Own(subject, subject.resident_id, request.state.request_id)


Myself = Annotated[Own, Depends(_own)]  # scope `me`, and a resident: else 403


def reads_recorded(
    request: Request,
    session: Session,
    subject: Subject,
    action: str,
    resident_ids: Iterable[str | None],
    *,
    items: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """One audit entry per resident whose records this request read (`access.reads`), in
    the transaction that read them."""
    record_reads(
        runtime_of(request),
        session,
        subject=subject,
        request_id=request.state.request_id,
        action=action,
        resident_ids=resident_ids,
        items=items,
    )


def decision_headers(access: Access, decision: Decision | None) -> dict[str, str]:
    headers = {"Decision-Id": access.decision_id}
    if decision is not None:
        headers["Policy-Revision"] = decision.revision
    return headers


def record_view(view: RecordView) -> dict[str, Any]:
    return {"resident_id": view.resident_id, "fields": view.fields, "treatments": view.treatments}
