"""Every answer that names a resident has its audit entries before it is sent.

The walk calls every operation of the OpenAPI document and every page route, as someone
allowed to, and reads the log the moment the answer arrives: each resident the answer
names (by vault id or by the caller's pseudonym, in JSON, CSV, HTML or inside a signed
receipt) must be named by an entry of that very request. An auditor's reads of the log
are recorded as one search entry per request. An answer that names nobody must really
name nobody. A route missing from the table fails the walk, so a route added later
without an entry cannot slip through.

The red team's case was `GET /v1/consents?resident_id=...` by a community worker, which
wrote nothing to the log.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import select

from access.models import CorrectionRequest
from api.oauth.service import create_user
from audit.models import AuditAlert, AuditEntry
from tests.browser.server import hidden_fields, sign_in
from tests.demo_server import residents_where
from tests.route_walk import World, operations, page_routes, residents_named, world_fixture
from vault.models import Household, Organisation, Resident, Room

world = world_fixture()

NAMES = "names"  # the answer names residents; each is named by an entry of the request
SEARCH = "search"  # an auditor's read of the log: one audit.* entry of the request
NOBODY = "nobody"  # the answer names no resident (public, metadata, aggregates)
WRITE = "write"  # a form or a write: the request left an entry, its answer names no one else
SELF = "self"  # a resident's own records: an entry of the request names them (and any ward)


OPERATOR = "operator"  # the demo operator (ops.demo): admin:write, and no resident data
WALK_PLACE = {"kind": "community", "id": "cm_walk", "name": "走访社区", "parent": "st_demo"}
WALK_ORG = {"id": "org_walk", "kind": "department", "name": "走访部门"}
WALK_PURPOSE = {
    "code": "walk-visit",
    "name": "走访",
    "name_en": "Walk visit",
    "basis": "statutory-duty",
    "law": "《测试条例》",
    "law_en": "Test Regulations",
    "recipients": ["department"],
    "actions": ["read"],
    "fields": {"name": "clear"},
}
# What the operator console's forms make (the pages' own ids, beside the API's above).
PAGE_IDS = {
    "place_id": "cm_walkpage",
    "organisation_id": "org_walkpage",
    "username": "walk.pagestaff",
}

JUSTIFIED = {"Justification": "2026%20annual%20subsidy%20review"}


@dataclass
class Case:
    kind: str
    role: str | None = None  # whose token (API) or session (page); None: anonymous
    purpose: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    json: dict[str, Any] | None = None
    form: dict[str, Any] | None = None  # page POSTs: a CSRF token is added
    files: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    csrf_from: str | None = None  # the page whose form carries the CSRF token


@dataclass
class Stage:
    """What the walk needs to exist: a consent, a request, an entry, a grant, a correction."""

    guardian: str
    wards: list[str]
    worker_resident: str  # a resident of the community worker's community
    worker_phone: str  # theirs, for the look-up by number
    grid_resident: str  # a resident of the grid worker's grid
    worker_company: str  # a property company the assisted consents name
    company: str  # the property company serving the guardian's building
    other: str  # the other property company
    property_pseudonym: str  # the guardian, as `company` names them
    dept_pseudonym: str  # the guardian, as org_civil_affairs names them
    consent_id: str  # the guardian's consent to `company`
    assisted_id: str  # an assisted consent of `worker_resident`, recorded at the counter
    entry_index: int  # an entry about the guardian that a checkpoint covers
    export_id: str
    correction_id: str  # a correction request of `worker_resident`
    alert_id: str | None
    grant_id: str  # the grid worker's break-glass grant


def _csrf(world: World, page: str) -> str:
    return hidden_fields(world.client.get(page).text)["csrf_token"]


def _stage(world: World) -> Stage:
    guardian = world.user("resident", username="resident.guardian")["resident_id"]
    worker = world.user("community_worker")
    grid = world.user("grid_worker")
    worker_resident = residents_where(world, community_id=worker["jurisdiction"]["community"])[0]
    grid_resident = residents_where(world, grid_id=grid["jurisdiction"]["grids"][0])[0]
    with world.runtime.vault.sessions() as session:
        phone = world.runtime.vault.store.read(session, worker_resident, ["phone"])["phone"]
    company = _company_serving(world, guardian)
    other = next(c for c in ("org_anju_property", "org_yijia_property") if c != company)
    stage = Stage(
        guardian=guardian,
        wards=list(world.user("resident", username="resident.guardian")["children"]),
        worker_resident=worker_resident,
        worker_phone=str(phone),
        grid_resident=grid_resident,
        worker_company="org_yijia_property",
        company=company,
        other=other,
        property_pseudonym=_pseudonym(world, company, guardian),
        dept_pseudonym=_pseudonym(world, "org_civil_affairs", guardian),
        consent_id="",
        assisted_id="",
        entry_index=-1,
        export_id="",
        correction_id="",
        alert_id=None,
        grant_id="",
    )
    stage.consent_id = _granted(world, company)
    stage.assisted_id = _assisted(world, stage)
    _asked(world, stage)
    export = world.call(
        "GET",
        "/v1/exports/residents",
        world.bearers["org_civil_affairs"],
        purpose="subsidy-review",
        headers=JUSTIFIED,
        params={"fields": "name", "community": "cm_xingfu"},
    )
    assert export.status_code == 200, export.text
    stage.export_id = _last_export(world)
    grant = world.call(
        "POST",
        "/v1/break-glass",
        world.bearers["grid_worker"],
        purpose="emergency-rescue",
        json={"resident_id": grid_resident, "justification": "fire in the stairwell"},
    )
    assert grant.status_code == 201, grant.text
    stage.grant_id = str(grant.json()["grant_id"])
    # The correction is filed by a resident of the community worker's community (the demo
    # places the guardian anywhere), through the portal as that resident.
    password = secrets.token_urlsafe(16)
    with world.runtime.transaction() as session:
        create_user(
            session,
            world.runtime.audit,
            username="walk.resident",
            password=password,
            role="resident",
            resident_id=worker_resident,
            actor="tests",
        )
    world.client.cookies.clear()
    assert sign_in(world.client, "portal", "walk.resident", password).status_code == 200
    filed = world.client.post(
        "/portal/correction",
        data={
            "csrf_token": _csrf(world, "/portal/correction"),
            "field": "phone",
            "value": "13912345678",
            "note": "new number",
        },
    )
    assert filed.status_code == 200, filed.text[:300]
    with world.runtime.vault.sessions() as session:
        stage.correction_id = str(
            session.scalars(
                select(CorrectionRequest.id).where(CorrectionRequest.resident_id == worker_resident)
            ).first()
        )
        stage.alert_id = session.scalars(select(AuditAlert.id)).first()
    deadline = time.monotonic() + 15
    while stage.entry_index < 0:
        items = world.call("GET", "/v1/me/accesses", world.bearers["resident"]).json()["items"]
        proven = [i["index"] for i in items if i.get("proof") and i["index"] is not None]
        if proven:
            stage.entry_index = int(proven[0])
            break
        assert time.monotonic() < deadline, "no entry about the guardian was checkpointed"
        time.sleep(0.3)
    return stage


def _company_serving(world: World, resident_id: str) -> str:
    """The property company serving the resident's building (the demo has one there)."""
    from vault.models import OrganisationBuilding

    with world.runtime.vault.sessions() as session:
        company = session.scalars(
            select(Organisation.id)
            .join(OrganisationBuilding, OrganisationBuilding.organisation_id == Organisation.id)
            .join(Room, Room.building_id == OrganisationBuilding.building_id)
            .join(Household, Household.room_id == Room.id)
            .join(Resident, Resident.household_id == Household.id)
            .where(Resident.id == resident_id, Organisation.type == "property_company")
        ).first()
    assert company is not None, "the demo guardian's building has no property company"
    return str(company)


def _pseudonym(world: World, organisation: str, resident_id: str) -> str:
    gate = world.client.app.state.gate  # type: ignore[attr-defined]
    return str(gate.pseudonyms.of(organisation, resident_id))


def _last_export(world: World) -> str:
    from access.exports.records import all_exports

    with world.runtime.vault.sessions() as session:
        return all_exports(session)[-1].id


CaseTable = dict[tuple[str, str], Case | Callable[[Stage], Case]]


def _api_cases() -> CaseTable:
    def c(**kw: Any) -> Callable[[Stage], Case]:
        return lambda s: Case(**{k: (v(s) if callable(v) else v) for k, v in kw.items()})

    return {
        ("GET", "/.well-known/oauth-authorization-server"): Case(NOBODY),
        ("GET", "/oauth/jwks"): Case(NOBODY),
        ("GET", "/oauth/authorize"): Case(NOBODY),
        ("POST", "/oauth/authorize"): Case(NOBODY, form={"username": "x", "password": "x"}),
        ("POST", "/oauth/token"): Case(NOBODY, form={"grant_type": "client_credentials"}),
        ("POST", "/oauth/revoke"): Case(NOBODY, form={"token": "x"}),
        ("POST", "/oauth/introspect"): Case(NOBODY, form={"token": "x"}),
        ("GET", "/v1/audit/checkpoint"): Case(NOBODY),
        ("GET", "/v1/audit/checkpoints"): Case(NOBODY),
        ("GET", "/v1/audit/proofs/inclusion"): Case(NOBODY, params={"index": 0, "tree_size": 1}),
        ("GET", "/v1/audit/proofs/consistency"): Case(NOBODY, params={"first": 1, "second": 2}),
        ("GET", "/v1/audit/public-key"): Case(NOBODY),
        ("GET", "/v1/audit/entries"): Case(SEARCH, "auditor"),
        ("GET", "/v1/audit/entries/{index}"): c(kind=SEARCH, role="auditor"),
        ("GET", "/v1/audit/reports/{report}"): Case(SEARCH, "auditor"),
        ("GET", "/v1/audit/alerts"): Case(NOBODY, "auditor"),
        ("POST", "/v1/audit/alerts/{alert_id}/review"): Case(
            NOBODY, "auditor", json={"outcome": "dismissed"}
        ),
        # Suspensions name workers and systems, never residents.
        ("GET", "/v1/audit/suspensions"): Case(NOBODY, "auditor"),
        ("POST", "/v1/audit/suspensions/{actor}/lift"): Case(
            NOBODY, "auditor", json={"reason": "reviewed: ordinary work"}
        ),
        # The admin API names places, organisations, mandates and staff, never residents.
        # Called as the demo operator, in this order: each change succeeds and is audited
        # (what one adds, the next moves, revokes or retires).
        ("GET", "/v1/admin/places"): Case(NOBODY, OPERATOR),
        ("POST", "/v1/admin/places"): Case(WRITE, OPERATOR, json=WALK_PLACE),
        ("POST", "/v1/admin/places/{place_id}/move"): Case(
            WRITE, OPERATOR, json={"kind": "community", "parent": "st_demo"}
        ),
        ("POST", "/v1/admin/places/{place_id}/retire"): Case(
            WRITE, OPERATOR, json={"kind": "community"}
        ),
        ("GET", "/v1/admin/organisations"): Case(NOBODY, OPERATOR),
        ("POST", "/v1/admin/organisations"): Case(WRITE, OPERATOR, json=WALK_ORG),
        ("GET", "/v1/admin/purposes"): Case(NOBODY, OPERATOR),
        ("POST", "/v1/admin/purposes"): Case(WRITE, OPERATOR, json=WALK_PURPOSE),
        ("GET", "/v1/admin/mandates"): Case(NOBODY, OPERATOR),
        ("POST", "/v1/admin/mandates"): Case(
            WRITE, OPERATOR, json={"org": "org_walk", "purpose": "walk-visit", "actions": ["read"]}
        ),
        ("POST", "/v1/admin/mandates/revoke"): Case(
            WRITE, OPERATOR, json={"org": "org_walk", "purpose": "walk-visit"}
        ),
        ("POST", "/v1/admin/organisations/{organisation_id}/retire"): Case(WRITE, OPERATOR),
        ("GET", "/v1/admin/accounts"): Case(NOBODY, OPERATOR),
        ("POST", "/v1/admin/accounts"): Case(
            WRITE,
            OPERATOR,
            json={"username": "walk.staff", "org": "org_civil_affairs", "role": "auditor"},
        ),
        ("POST", "/v1/admin/accounts/{username}/reset-password"): Case(WRITE, OPERATOR),
        ("POST", "/v1/admin/accounts/{username}/disable"): Case(WRITE, OPERATOR),
        ("GET", "/v1/admin/district"): Case(NOBODY, OPERATOR),
        # A dry run of an empty document: refused cleanly (422), nothing written.
        ("POST", "/v1/admin/district"): Case(NOBODY, OPERATOR, params={"dry_run": "true"}, json={}),
        ("GET", "/v1/residents/{resident_id}"): Case(NAMES, "org_civil_affairs", "subsidy-review"),
        ("PATCH", "/v1/residents/{resident_id}"): lambda s: Case(
            WRITE,
            "community_worker",
            "counter-service",
            json={"fields": {"phone": s.worker_phone}},  # the same number: searches still find it
        ),
        ("GET", "/v1/residents"): Case(NAMES, "grid_worker", "grid-service"),
        ("POST", "/v1/residents"): Case(WRITE, "community_worker", "counter-service"),
        ("POST", "/v1/residents/search"): Case(NAMES, "community_worker", "counter-service"),
        ("GET", "/v1/exports/residents"): Case(
            NAMES,
            "org_civil_affairs",
            "subsidy-review",
            params={"fields": "name", "community": "cm_xingfu"},
            headers=JUSTIFIED,
        ),
        ("GET", "/v1/exports/{export_id}"): Case(NOBODY, "org_civil_affairs", "subsidy-review"),
        ("GET", "/v1/me"): Case(SELF, "resident"),
        ("GET", "/v1/me/children"): Case(SELF, "resident"),
        ("GET", "/v1/me/accesses"): Case(SELF, "resident"),
        ("GET", "/v1/me/accesses/{index}/proof"): Case(SELF, "resident"),
        ("GET", "/v1/me/export"): Case(SELF, "resident", params={"format": "csv"}),
        ("GET", "/v1/me/consents"): Case(SELF, "resident"),
        ("POST", "/v1/me/consents"): lambda s: Case(
            WRITE,
            "resident",
            json={"recipient": s.other, "purpose": "property-notice", "separate": True},
        ),
        ("POST", "/v1/me/consents/{consent_id}/revoke"): Case(WRITE, "resident"),
        ("GET", "/v1/me/consent-requests"): Case(SELF, "resident"),
        ("POST", "/v1/me/consent-requests/{request_id}/answer"): Case(
            WRITE, "resident", json={"accept": False}
        ),
        ("GET", "/v1/consents"): Case(NAMES, "community_worker"),
        ("POST", "/v1/consents"): Case(WRITE, "community_worker"),
        ("POST", "/v1/consents/{consent_id}/revoke"): Case(
            WRITE, "community_worker", json={"witness": "王五"}
        ),
        ("POST", "/v1/consent-requests"): lambda s: Case(WRITE, s.company),
        ("GET", "/v1/consents/{consent_id}/receipt"): Case(SELF, "resident"),
        ("GET", "/v1/receipt-keys"): Case(NOBODY),
        ("POST", "/v1/decisions/explain"): Case(
            NOBODY, "org_civil_affairs", json={"purpose": "subsidy-review", "action": "read"}
        ),
        ("GET", "/v1/decisions/{decision_id}"): Case(NOBODY, "org_civil_affairs"),
        ("GET", "/v1/me/visibility"): Case(SELF, "resident"),
        ("GET", "/v1/organisations/{organisation}/visibility"): Case(NOBODY, "auditor"),
        ("POST", "/v1/break-glass"): Case(WRITE, "grid_worker", "emergency-rescue"),
        ("GET", "/v1/audit/break-glass"): Case(NAMES, "auditor"),
        ("POST", "/v1/audit/break-glass/{grant_id}/review"): Case(
            WRITE, "auditor", json={"outcome": "justified"}
        ),
        ("GET", "/v1/me/notifications"): Case(SELF, "resident"),
        ("GET", "/v1/stats"): Case(NOBODY, "org_civil_affairs", "community-statistics"),
        ("GET", "/v1/stats/budget"): Case(NOBODY, "org_civil_affairs", "community-statistics"),
        ("GET", "/v1/stats/{measure}"): Case(NOBODY, "org_civil_affairs", "community-statistics"),
        ("GET", "/v1/purposes"): Case(NOBODY),
        ("GET", "/v1/fields"): Case(NOBODY),
        ("GET", "/healthz"): Case(NOBODY),
        ("GET", "/readyz"): Case(NOBODY),
    }


def _page_cases() -> CaseTable:
    return {
        ("GET", "/portal/"): Case(SELF, "resident"),
        ("GET", "/portal/login"): Case(NOBODY),
        ("GET", "/portal/callback"): Case(NOBODY),
        ("POST", "/portal/logout"): Case(NOBODY, "resident", form={}, csrf_from="/portal/"),
        ("POST", "/portal/hidden"): Case(NOBODY, "resident", form={}, csrf_from="/portal/"),
        ("GET", "/portal/accesses"): Case(SELF, "resident"),
        ("GET", "/portal/accesses/{index}/proof"): Case(SELF, "resident"),
        ("GET", "/portal/accesses/{index}/verify"): Case(SELF, "resident"),
        ("GET", "/portal/consents"): Case(SELF, "resident"),
        ("POST", "/portal/consents"): lambda s: Case(
            WRITE,
            "resident",
            form={"recipient": s.other, "purpose": "property-notice"},
            csrf_from="/portal/consents",
        ),
        ("POST", "/portal/consents/{consent_id}/revoke"): Case(
            WRITE, "resident", form={}, csrf_from="/portal/consents"
        ),
        ("POST", "/portal/consent-requests/{request_id}/answer"): Case(
            WRITE, "resident", form={"accept": "0"}, csrf_from="/portal/consents"
        ),
        ("GET", "/portal/consents/{consent_id}/receipt"): Case(SELF, "resident"),
        ("GET", "/portal/consents/{consent_id}/receipt/view"): Case(SELF, "resident"),
        ("GET", "/portal/download"): Case(NOBODY, "resident"),
        ("GET", "/portal/export.{fmt}"): Case(SELF, "resident"),
        ("GET", "/portal/children"): Case(SELF, "resident"),
        ("GET", "/portal/correction"): Case(SELF, "resident"),
        ("POST", "/portal/correction"): Case(
            WRITE,
            "resident",
            form={"field": "phone", "value": "13700000000", "note": ""},
            csrf_from="/portal/correction",
        ),
        ("GET", "/desk/"): Case(NOBODY, "community_worker"),
        ("GET", "/desk/login"): Case(NOBODY),
        ("GET", "/desk/callback"): Case(NOBODY),
        ("POST", "/desk/logout"): Case(NOBODY, "community_worker", form={}, csrf_from="/desk/"),
        ("POST", "/desk/search"): Case(NAMES, "community_worker", csrf_from="/desk/"),
        ("GET", "/desk/residents/{resident_id}"): Case(
            NAMES, "community_worker", params={"purpose": "counter-service"}
        ),
        ("POST", "/desk/consents"): Case(WRITE, "community_worker", csrf_from="/desk/"),
        ("POST", "/desk/consents/{consent_id}/revoke"): Case(
            WRITE, "community_worker", form={"witness": "王五"}, csrf_from="/desk/"
        ),
        ("GET", "/desk/receipts/{consent_id}"): Case(NAMES, "community_worker"),
        ("GET", "/desk/corrections"): Case(NAMES, "community_worker"),
        ("POST", "/desk/corrections/{request_id}/open"): Case(
            NAMES, "community_worker", form={}, csrf_from="/desk/corrections"
        ),
        ("POST", "/desk/corrections/{request_id}/resolve"): Case(
            WRITE, "community_worker", form={}, csrf_from="/desk/corrections"
        ),
        ("GET", "/console/"): Case(SEARCH, "auditor"),
        ("GET", "/console/login"): Case(NOBODY),
        ("GET", "/console/callback"): Case(NOBODY),
        ("POST", "/console/logout"): Case(NOBODY, "auditor", form={}, csrf_from="/console/"),
        ("GET", "/console/export.csv"): Case(SEARCH, "auditor"),
        ("GET", "/console/charts"): Case(NOBODY, "auditor"),
        ("GET", "/console/anomalies"): Case(SEARCH, "auditor"),
        ("POST", "/console/suspensions/{actor}/lift"): Case(
            NOBODY,
            "auditor",
            form={"reason": "reviewed: ordinary work"},
            csrf_from="/console/anomalies",
        ),
        ("GET", "/console/heads"): Case(NOBODY, "auditor"),
        # The operator console: places, organisations, mandates and staff, never a resident.
        ("GET", "/operator/"): Case(NOBODY, OPERATOR),
        ("GET", "/operator/login"): Case(NOBODY),
        ("GET", "/operator/callback"): Case(NOBODY),
        ("POST", "/operator/logout"): Case(NOBODY, OPERATOR, form={}, csrf_from="/operator/"),
        ("POST", "/operator/places"): Case(
            WRITE,
            OPERATOR,
            form={
                "kind": "community",
                "id": "cm_walkpage",
                "name": "页面社区",
                "parent": "st_demo",
            },
            csrf_from="/operator/",
        ),
        ("POST", "/operator/places/{place_id}/move"): Case(
            WRITE, OPERATOR, form={"kind": "community", "parent": "st_demo"}, csrf_from="/operator/"
        ),
        ("POST", "/operator/places/{place_id}/retire"): Case(
            WRITE, OPERATOR, form={"kind": "community"}, csrf_from="/operator/"
        ),
        ("GET", "/operator/organisations"): Case(NOBODY, OPERATOR),
        ("POST", "/operator/organisations"): Case(
            WRITE,
            OPERATOR,
            form={"id": "org_walkpage", "kind": "department", "name": "页面部门"},
            csrf_from="/operator/organisations",
        ),
        ("GET", "/operator/mandates"): Case(NOBODY, OPERATOR, params={"history": "1"}),
        ("POST", "/operator/mandates"): Case(
            WRITE,
            OPERATOR,
            form={"org": "org_walkpage", "purpose": "walk-visit", "actions": "read"},
            csrf_from="/operator/mandates",
        ),
        ("POST", "/operator/mandates/revoke"): Case(
            WRITE,
            OPERATOR,
            form={"org": "org_walkpage", "purpose": "walk-visit"},
            csrf_from="/operator/mandates",
        ),
        ("POST", "/operator/organisations/{organisation_id}/retire"): Case(
            WRITE, OPERATOR, form={}, csrf_from="/operator/organisations"
        ),
        ("GET", "/operator/accounts"): Case(NOBODY, OPERATOR),
        ("POST", "/operator/accounts"): Case(
            WRITE,
            OPERATOR,
            form={"username": "walk.pagestaff", "org": "org_civil_affairs", "role": "auditor"},
            csrf_from="/operator/accounts",
        ),
        ("POST", "/operator/accounts/{username}/reset-password"): Case(
            WRITE, OPERATOR, form={}, csrf_from="/operator/accounts"
        ),
        ("POST", "/operator/accounts/{username}/disable"): Case(
            WRITE, OPERATOR, form={}, csrf_from="/operator/accounts"
        ),
    }


# The ids each path parameter takes in the walk, and the bodies that need staged ids.
def _fill(path: str, stage: Stage, role: str | None) -> str:
    resident = {
        "org_civil_affairs": stage.dept_pseudonym,
        "community_worker": stage.worker_resident,
    }.get(role or "", stage.worker_resident)
    values = {
        "index": str(stage.entry_index),
        "report": "sensitive-reads",
        "alert_id": stage.alert_id or "al_none",
        "actor": "walk.nobody",
        "resident_id": resident,
        "export_id": stage.export_id,
        "consent_id": stage.consent_id,
        "decision_id": "dec_none",
        "organisation": "org_civil_affairs",
        "grant_id": stage.grant_id,
        "measure": "residents",
        "fmt": "csv",
        "place_id": "cm_walk",
        "organisation_id": "org_walk",
        "username": "walk.staff",
    }
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    return path


def _staged(method: str, path: str, case: Case, stage: Stage) -> Case:
    """Bodies and ids that depend on what was staged."""
    if (method, path) == ("POST", "/v1/residents"):
        case.json = {"fields": {"name": "测试居民", "birth_date": "1990-01-01"}}
    if (method, path) == ("POST", "/v1/consents"):
        case.json = _assisted_body(stage)
    if (method, path) == ("POST", "/v1/consent-requests"):
        case.json = {"resident_id": stage.property_pseudonym, "purpose": "property-notice"}
    if (method, path) == ("POST", "/v1/break-glass"):
        case.json = {
            "resident_id": stage.grid_resident,
            "reason": "gas leak reported",
            "justification": "gas leak reported",
        }
    if (method, path) == ("POST", "/v1/residents/search"):
        case.json = {"phone": stage.worker_phone}
    if path == "/v1/consents" and method == "GET":
        case.params = {"resident_id": stage.worker_resident}
    if path == "/desk/receipts/{consent_id}":
        case.params = {"resident_id": stage.worker_resident}
    if path == "/desk/search":
        case.form = {"by": "phone", "value": stage.worker_phone, "purpose": "counter-service"}
    if path == "/desk/consents":
        case.form = {
            "resident_id": stage.worker_resident,
            "recipient": "org_yijia_property",
            "purpose": "property-notice",
            "witness": "王五",
        }
        case.files = {"form": ("form.pdf", b"%PDF-1.4 signed", "application/pdf")}
    return case


def _target(world: World, method: str, path: str, stage: Stage, role: str | None) -> str:
    """The path to call; a revocation or an answer gets a fresh consent or request of its
    own (made by another request just before), so the walk's order does not matter."""
    if method == "POST" and path.endswith("{consent_id}/revoke"):
        fresh = (
            _assisted(world, stage)
            if path.startswith(("/v1/consents", "/desk"))
            else (_granted(world, stage.other))
        )
        return path.replace("{consent_id}", fresh)
    if method == "POST" and path.endswith("{request_id}/answer"):
        return path.replace("{request_id}", _asked(world, stage))
    if "{request_id}" in path and "corrections" in path:
        return path.replace("{request_id}", stage.correction_id)
    if path == "/desk/receipts/{consent_id}":
        return path.replace("{consent_id}", stage.assisted_id)
    if path.startswith("/operator/"):
        for name, value in PAGE_IDS.items():
            path = path.replace("{" + name + "}", value)
    return _fill(path, stage, role)


def _granted(world: World, recipient: str) -> str:
    answer = world.call(
        "POST",
        "/v1/me/consents",
        world.bearers["resident"],
        json={"recipient": recipient, "purpose": "property-notice", "separate": True},
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["consent_id"])


def _assisted_body(stage: Stage) -> dict[str, Any]:
    """An assisted consent at the counter, with a scanned form and a witness."""
    return {
        "resident_id": stage.worker_resident,
        "recipient": stage.worker_company,
        "purpose": "property-notice",
        "separate": True,
        "witness": "王五",
        "evidence": {"content_base64": base64.b64encode(b"%PDF-1.4 form").decode()},
    }


def _assisted(world: World, stage: Stage) -> str:
    answer = world.call(
        "POST", "/v1/consents", world.bearers["community_worker"], json=_assisted_body(stage)
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["consent_id"])


def _asked(world: World, stage: Stage) -> str:
    answer = world.call(
        "POST",
        "/v1/consent-requests",
        world.bearers[stage.company],
        json={"resident_id": stage.property_pseudonym, "purpose": "property-notice"},
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["request_id"])


@pytest.fixture(scope="module")
def stage(world: World) -> Stage:
    return _stage(world)


def _vault_id(world: World, named: str) -> str:
    """The vault id behind a pseudonym of any organisation (or the id itself)."""
    if not named.startswith("ps_"):
        return named
    gate = world.client.app.state.gate  # type: ignore[attr-defined]
    with world.runtime.vault.sessions() as session:
        organisations = list(session.scalars(select(Organisation.id)))
    for organisation in organisations:
        found = gate.pseudonyms.resolve(organisation, named)
        if found:
            return str(found)
    return named


def _check(world: World, stage: Stage, label: str, case: Case, response: Any) -> None:
    named = residents_named(response)
    request_id = response.headers.get("x-request-id", "")
    entries = world.entries_of(request_id) if request_id else []
    if case.kind == NOBODY:
        assert not named, f"{label} names residents {named} but is listed as naming nobody"
        return
    assert response.status_code < 400, (label, response.status_code, response.text[:300])
    if case.kind == SEARCH:
        assert any(e.action.startswith("audit.") for e in entries), f"{label}: no search entry"
        return
    if case.kind == WRITE:
        assert entries, f"{label}: the write left no entry"
    elif case.kind == SELF:
        family = {stage.guardian, *stage.wards}
        assert any(e.resident_id in family for e in entries), f"{label}: no entry"
    else:
        assert any(e.resident_id for e in entries), (
            f"{label}: no entry names a resident: {response.text[:300]}"
        )
    recorded = {e.resident_id for e in entries}
    missing = {_vault_id(world, n) for n in named} - recorded
    assert not missing, f"{label} named {missing} with no entry of its request"


def _run(world: World, stage: Stage, method: str, path: str, case: Case) -> Any:
    case = _staged(method, path, case, stage)
    target = _target(world, method, path, stage, case.role)
    if path.startswith(("/portal", "/desk", "/console", "/operator")):
        if case.role is None:
            world.client.cookies.clear()
        else:
            match = {"username": "resident.guardian"} if case.role == "resident" else {}
            world.sign_in(case.role, **match)
        data = None
        if case.form is not None:
            data = {**case.form, "csrf_token": _csrf(world, case.csrf_from or "/")}
        return world.client.request(
            method,
            target,
            params=case.params or None,
            data=data,
            files=case.files,
            follow_redirects=False,  # a form's own answer, not the page it redirects to
        )
    bearer = world.bearers.get(case.role) if case.role else None
    return world.call(
        method,
        target,
        bearer,
        purpose=case.purpose,
        params=case.params or None,
        json=case.json,
        data=case.form,
        headers=case.headers,
    )


def test_every_route_is_in_the_table(world: World) -> None:
    api = {(m, p) for m, p, _ in operations(world)}
    pages = set(page_routes(world))
    assert api - set(_api_cases()) == set(), "API routes the walk does not know"
    assert pages - set(_page_cases()) == set(), "page routes the walk does not know"
    assert set(_api_cases()) - api == set() and set(_page_cases()) - pages == set()


def test_every_answer_naming_a_resident_was_recorded_first(world: World, stage: Stage) -> None:
    kinds: dict[str, int] = {}
    failures = []
    for table in (_api_cases(), _page_cases()):
        for (method, path), made in table.items():
            case = made(stage) if callable(made) else made
            response = _run(world, stage, method, path, case)
            try:
                kinds[case.kind] = kinds.get(case.kind, 0) + 1
                _check(world, stage, f"{method} {path}", case, response)
            except AssertionError as error:
                failures.append(str(error).splitlines()[0])
    assert not failures, "\n".join(failures)
    assert kinds[NAMES] >= 8 and kinds[SELF] >= 20 and kinds[SEARCH] >= 4 and kinds[WRITE] >= 10


def test_the_red_teams_case_a_workers_read_of_consents_is_recorded(
    world: World, stage: Stage
) -> None:
    response = world.call(
        "GET",
        "/v1/consents",
        world.bearers["community_worker"],
        params={"resident_id": stage.worker_resident},
    )
    assert response.status_code == 200, response.text
    assert response.json()["items"], "the staged assisted consent is listed"
    entries = world.entries_of(response.headers["x-request-id"])
    worker = world.user("community_worker")
    assert [(e.resident_id, e.user, e.kind) for e in entries] == [
        (stage.worker_resident, worker["username"], "access")
    ]
    assert all(isinstance(e, AuditEntry) and e.outcome == "allowed" for e in entries)
