"""What the API answers, as pydantic models: the OpenAPI document's response schemas.

The routes build their JSON themselves (with `Decision-Id` and `Policy-Revision` headers,
streamed or not), so these models describe the answers rather than produce them:
schemathesis checks every answer against them (tests/test_openapi_contract.py), and a
client generated from `/openapi.json` gets typed results. Each model allows members it
does not name, so adding one to an answer is not a breaking change.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Shape(BaseModel):
    model_config = ConfigDict(extra="allow")


# -- resident records ------------------------------------------------------------------------


class Record(Shape):
    """A resident record as the caller may see it (docs/api.md, "A resident record")."""

    resident_id: str = Field(description="a pseudonym (ps_...) for organisations, else a vault id")
    fields: dict[str, Any] = Field(description="each permitted field's value, masked as decided")
    treatments: dict[str, str] = Field(
        description="each field asked about: clear, masked, generalised or denied"
    )


class RecordPage(Shape):
    items: list[Record]
    next_cursor: str | None
    left_out: int = Field(description="residents left out for lack of consent (a count only)")


class ResidentWritten(Shape):
    resident_id: str


class ExportSummary(Shape):
    export_id: str
    state: str
    rows: int
    left_out: int
    purpose: str | None
    format: str


class MyCopy(Shape):
    resident_id: str
    fields: dict[str, Any]


class Records(Shape):
    items: list[Record]


# -- the audit log -----------------------------------------------------------------------------


class EntrySummary(Shape):
    """One audit entry: who, on whose behalf, for what; field names and treatments only."""

    index: int | None = Field(description="leaf index in the log; null until integrated")
    entry_id: str
    recorded_at: str
    kind: str
    action: str
    outcome: str
    channel: str
    subject_type: str | None
    organisation: str | None
    client: str | None
    user: str | None
    on_behalf_of: str | None
    purpose: str | None
    legal_basis: str | None
    consent_id: str | None
    resident_id: str | None
    fields: dict[str, str] | None
    decision_id: str | None
    policy_revision: str | None
    request_id: str | None
    reason: str | None
    details: dict[str, Any] | None


class EntryPage(Shape):
    items: list[EntrySummary]
    next_cursor: str | None


class Entry(EntrySummary):
    canonical: str = Field(description="the entry's canonical bytes, base64, as hashed")


class Report(Shape):
    items: list[dict[str, Any]]
    total: int | None = None


class InclusionOfMine(Shape):
    tree_size: int
    hashes: list[str]


class MyAccess(EntrySummary):
    proof: InclusionOfMine | None = Field(
        description="inclusion proof against the latest checkpoint; null until one covers it"
    )


class MyAccessPage(Shape):
    items: list[MyAccess]
    next_cursor: str | None


class SignedHead(Shape):
    checkpoint: str = Field(description="a C2SP checkpoint (signed note)")
    tree_size: int
    signed_at: str = Field(description="ISO 8601, unsigned")


class SignedHeads(Shape):
    items: list[SignedHead]


class InclusionProof(Shape):
    index: int
    tree_size: int
    hashes: list[str] = Field(description="base64 hashes, leaf to root")


class ConsistencyProof(Shape):
    first: int
    second: int
    hashes: list[str]


class Alert(Shape):
    alert_id: str
    kind: str
    actor: str
    actor_kind: str
    organisation: str | None
    window_start: str
    window_end: str
    observed: int
    threshold: int
    details: dict[str, Any]
    status: str
    created_at: str
    reviewed_by: str | None
    suspended: bool


class Alerts(Shape):
    items: list[Alert]


class Suspension(Shape):
    suspension_id: str
    actor: str
    actor_kind: str
    alert_id: str | None
    reason: str | None
    created_at: str


class Suspensions(Shape):
    items: list[Suspension]


class Lifted(Shape):
    actor: str
    lifted: list[str]
    suspended: bool


# -- consent -----------------------------------------------------------------------------------


class Consent(Shape):
    """A consent as shown to residents and workers; evidence only as hash and witness."""

    consent_id: str
    resident_id: str
    recipient: str
    purpose: str
    purpose_name: Any = None
    fields: list[str]
    categories: list[str]
    legal_basis: str | None
    separate: bool
    channel: str
    status: str = Field(description="active, expired, revoked or superseded")
    granted_at: str | None
    expires_at: str | None
    revoked_at: str | None
    evidence: dict[str, Any] | None
    receipt: str | None = Field(default=None, description="the signed receipt, a compact JWS")
    receipt_url: str | None = None


class LegalBasis(Shape):
    """A purpose that does not rest on consent, with its legal basis."""

    purpose: str
    legal_basis: str | None
    requires_consent: bool


class MyConsents(Shape):
    items: list[Consent]
    legal_bases: list[LegalBasis]


class Consents(Shape):
    items: list[Consent]


class ConsentRequest(Shape):
    request_id: str
    resident_id: str
    recipient: str
    purpose: str
    fields: list[str]
    separate: bool
    message: str | None
    status: str
    requested_at: str
    answered_at: str | None
    consent_id: str | None
    consent: Consent | None = None


class ConsentRequests(Shape):
    items: list[ConsentRequest]


class Jwk(Shape):
    kty: str
    kid: str | None = None


class Jwks(Shape):
    keys: list[Jwk]


# -- explanations and break-glass ----------------------------------------------------------


class Explanation(Shape):
    """A decision in words: outcome, reason, rules, each field, what would change it."""

    outcome: str
    reason: dict[str, Any]
    fields: list[dict[str, Any]]
    summary: str
    subject: dict[str, Any] | None = None


class PastDecision(Shape):
    decision_id: str
    recorded: dict[str, Any]
    explanation: Explanation | None
    evaluation_entry: str | None = None
    refused_by: str | None = None


class MyVisibility(Shape):
    resident_id: str
    combinations: list[dict[str, Any]]
    fields: dict[str, dict[str, Any]]


class OrganisationView(Shape):
    purpose: str
    action: str
    allowed: bool
    fields: dict[str, str]


class OrganisationVisibility(Shape):
    organisation: str
    type: str | None
    items: list[OrganisationView]


class Grant(Shape):
    grant_id: str
    worker: str | None
    subject_type: str | None
    organisation: str | None
    resident_id: str
    purpose: str
    justification: str | None
    created_at: str
    expires_at: str
    review_status: str
    reviewed_by: str | None
    reviewed_at: str | None
    review_note: str | None
    accesses: int | None = None


class Grants(Shape):
    items: list[Grant]


class Notification(Shape):
    notification_id: str
    resident_id: str
    kind: str
    text: str | None
    reference: str | None
    created_at: str


class Notifications(Shape):
    items: list[Notification]


# -- statistics --------------------------------------------------------------------------------


class Measure(Shape):
    measure: str
    label: str
    unit: str
    field: str | None
    categories: list[str]


class Measures(Shape):
    items: list[Measure]


class Budget(Shape):
    period: str
    epsilon_total: float
    epsilon_spent: float
    epsilon_remaining: float
    renews_at: str


class StatsCell(Shape):
    id: str
    level: str
    name: str | None
    parent: str | None
    values: dict[str, int | float | None]


class Statistics(Shape):
    measure: str
    label: str
    unit: str
    by: str
    categories: list[str]
    cells: list[StatsCell]
    totals: list[StatsCell]
    disclosure: dict[str, Any]
    budget: Budget


# -- metadata and operations -----------------------------------------------------------------


class Purpose(Shape):
    code: str
    notice: dict[str, Any] | None = None


class Purposes(Shape):
    items: list[Purpose]


class Catalogue(Shape):
    version: int
    categories: dict[str, dict[str, str]]
    items: list[dict[str, Any]]


class Health(Shape):
    status: str


class Readiness(Shape):
    status: str
    checks: dict[str, dict[str, Any]]


# -- OAuth -------------------------------------------------------------------------------------


class ServerMetadata(Shape):
    """RFC 8414 authorization server metadata."""

    issuer: str
    token_endpoint: str


class TokenAnswer(Shape):
    """RFC 6749 section 5.1."""

    access_token: str
    token_type: str
    expires_in: int | None = None
    scope: str | None = None
    refresh_token: str | None = None


class Revoked(Shape):
    """RFC 7009 section 2.2: 200 and an empty object, whether or not the token was live."""


class Introspection(Shape):
    """RFC 7662 section 2.2: `active`, and the token's claims when it is."""

    active: bool


class OAuthError(Shape):
    """RFC 6749 section 5.2: the OAuth endpoints' own error shape (not a problem)."""

    error: str
    error_description: str | None = None
