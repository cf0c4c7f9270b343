"""Minimisation and explanation over real HTTP: pseudonyms, generalised values, explanations
of allowed and refused requests, and the resident's dry run checked against real reads."""

from __future__ import annotations

import json
from urllib.parse import quote

from sqlalchemy import select

from audit.models import AuditEntry
from consent.models import Consent
from tests.demo_server import DemoServer, call, demo_server_fixture, residents_in
from vault.models import Building, Household, Resident, Room
from vault.pseudonyms import is_pseudonym

CIVIL = "org_civil_affairs"
HEALTH = "org_health"
COMPANY = "org_anju_property"


server = demo_server_fixture("explain-demo")


def consenting_resident(server: DemoServer) -> tuple[str, str]:
    """A cm_xingfu resident who consents to the company's notices: (vault id, their token)."""
    with server.runtime.vault.sessions() as session:
        consented = session.scalars(
            select(Consent.resident_id).where(Consent.recipient == COMPANY)
        ).first()
    resident = consented or residents_in(server, "cm_xingfu")[-1]
    token = server.resident_token(resident)
    if consented is None:
        granted = call(
            server,
            "POST",
            "/v1/me/consents",
            token,
            json={
                "recipient": COMPANY,
                "purpose": "property-notice",
                "separate": True,
                "fields": ["phone", "address"],
            },
        )
        assert granted.status_code == 201, granted.text
    return resident, token


def listed(server: DemoServer, organisation: str, purpose: str) -> list[str]:
    token = server.client_token(organisation)
    body = call(server, "GET", "/v1/residents", token, purpose, params={"limit": 500}).json()
    return [item["resident_id"] for item in body["items"]]


# -- pseudonyms -----------------------------------------------------------------------------


def test_two_organisations_see_one_resident_under_unlinkable_pseudonyms(
    server: DemoServer,
) -> None:
    civil = listed(server, CIVIL, "subsidy-review")
    health = listed(server, HEALTH, "public-health-followup")
    assert civil and health and len(civil) == len(health)
    assert all(is_pseudonym(p) for p in civil + health)
    # Both list the same residents in the same (vault) order, under disjoint names.
    assert not set(civil) & set(health)
    everyone = set(residents_in(server, "cm_xingfu")) | set(residents_in(server, "cm_hexie"))
    assert not everyone & set(civil)  # no vault id leaves to an organisation
    # One organisation's pseudonym opens nothing for the other, nor does a vault id.
    health_token = server.client_token(HEALTH)
    for given in (civil[0], sorted(everyone)[0]):
        refused = call(
            server, "GET", f"/v1/residents/{given}", health_token, "public-health-followup"
        )
        assert refused.status_code == 404, refused.text
    # The refusal is on record, against the resident when the pseudonym resolves for no one.
    with server.runtime.vault.sessions() as session:
        entry = session.scalars(
            select(AuditEntry).where(AuditEntry.decision_id == refused.headers["Decision-Id"])
        ).one()
    assert entry.outcome == "denied" and entry.reason == "not-found"


def test_every_api_round_trips_the_callers_pseudonym(server: DemoServer) -> None:
    token = server.client_token(CIVIL)
    purpose = "subsidy-review"
    # List with a cursor: the cursor is a pseudonym too, and pages join up.
    first = call(server, "GET", "/v1/residents", token, purpose, params={"limit": 5}).json()
    cursor = first["next_cursor"]
    assert is_pseudonym(cursor) and cursor == first["items"][-1]["resident_id"]
    second = call(
        server, "GET", "/v1/residents", token, purpose, params={"limit": 5, "cursor": cursor}
    ).json()
    everyone = listed(server, CIVIL, purpose)
    assert [i["resident_id"] for i in first["items"] + second["items"]] == everyone[:10]
    bad = call(server, "GET", "/v1/residents", token, purpose, params={"cursor": "ps_nonsense"})
    assert bad.status_code == 422 and bad.json()["type"].endswith("/problems/validation-error")
    # Read by pseudonym: the same pseudonym comes back.
    pseudonym = everyone[3]
    read = call(server, "GET", f"/v1/residents/{pseudonym}", token, purpose)
    assert read.status_code == 200 and read.json()["resident_id"] == pseudonym
    # Search by identifier (the ID number is a declared linking key for this purpose).
    id_number = read.json()["fields"]["id_number"]
    found = call(
        server, "POST", "/v1/residents/search", token, purpose, json={"id_number": id_number}
    )
    assert [i["resident_id"] for i in found.json()["items"]] == [pseudonym]
    # Export rows name residents by pseudonym.
    export = call(
        server,
        "GET",
        "/v1/exports/residents",
        token,
        purpose,
        params={"fields": "name,low_income_status"},
        headers={"Justification": quote("年度复核")},
    )
    rows = [json.loads(line)["resident_id"] for line in export.text.splitlines()]
    assert set(everyone) <= set(rows)  # in the export's keyed order, with a few decoys
    # A write by pseudonym: no purpose lets an organisation write, so it is refused, and
    # the refusal is recorded against the resident the pseudonym stands for.
    patched = call(
        server,
        "PATCH",
        f"/v1/residents/{pseudonym}",
        token,
        purpose,
        json={"fields": {"employment_status": "retired"}},
    )
    assert patched.status_code == 403, patched.text
    with server.runtime.vault.sessions() as session:
        refusal = session.scalars(
            select(AuditEntry).where(AuditEntry.decision_id == patched.headers["Decision-Id"])
        ).one()
    assert refusal.resident_pseudonym == pseudonym
    assert refusal.resident_id == server.app.state.gate.pseudonyms.resolve(CIVIL, pseudonym)
    # The log records both the vault id and the pseudonym of every read.
    with server.runtime.vault.sessions() as session:
        entry = session.scalars(
            select(AuditEntry).where(AuditEntry.decision_id == read.headers["Decision-Id"])
        ).one()
    assert entry.resident_pseudonym == pseudonym
    assert entry.resident_id == server.app.state.gate.pseudonyms.resolve(CIVIL, pseudonym)
    assert entry.resident_id and not is_pseudonym(entry.resident_id)


def test_workers_and_residents_see_vault_ids(server: DemoServer) -> None:
    worker = server.user("grid_worker")
    token = server.login(worker["username"], worker["password"], "residents:read")
    body = call(server, "GET", "/v1/residents", token["access_token"], "grid-service").json()
    assert body["items"] and not any(is_pseudonym(i["resident_id"]) for i in body["items"])


# -- generalised values --------------------------------------------------------------------------


def test_generalised_values_follow_the_purposes_level(server: DemoServer) -> None:
    # Elderly-care visits: "80岁以上", never the birth date or the decade.
    token = server.client_token(CIVIL)
    body = call(
        server,
        "GET",
        "/v1/residents",
        token,
        "elderly-care-visit",
        params={"limit": 500, "fields": "birth_date"},
    ).json()
    labels = {item["fields"]["birth_date"] for item in body["items"]}
    assert labels <= {"未满60岁", "60岁以上", "70岁以上", "80岁以上", "未知"}
    assert labels & {"未满60岁", "60岁以上", "70岁以上", "80岁以上"}
    # A property notice needs the building, not the room.
    resident, _ = consenting_resident(server)
    with server.runtime.vault.sessions() as session:
        building = session.scalars(
            select(Building.name)
            .join(Room, Room.building_id == Building.id)
            .join(Household, Household.room_id == Room.id)
            .join(Resident, Resident.household_id == Household.id)
            .where(Resident.id == resident)
        ).one()
        address = server.runtime.vault.store.read(session, resident, ["address"])["address"]
    company = server.client_token(COMPANY)
    pseudonym = server.pseudonym(COMPANY, resident)
    record = call(server, "GET", f"/v1/residents/{pseudonym}", company, "property-notice").json()
    assert record["treatments"]["address"] == "generalised"
    assert record["fields"]["address"] == building != address


# -- explanations --------------------------------------------------------------------------------


def test_explain_names_the_deciding_rule_when_allowed_and_refused(server: DemoServer) -> None:
    company = server.client_token(COMPANY)
    refused = call(
        server, "POST", "/v1/decisions/explain", company, json={"purpose": "subsidy-review"}
    ).json()
    assert refused["outcome"] == "denied"
    assert "deny:no-mandate" in refused["deciding_rules"]
    changes = {c["code"]: c for c in refused["changes"]}
    assert changes["mandate-holders"]["organisations"] == [CIVIL]
    assert "物业服务通知" in changes["other-purposes"]["text"]
    allowed = call(
        server,
        "POST",
        "/v1/decisions/explain",
        company,
        json={"purpose": "property-notice", "fields": ["phone", "address", "religion"]},
        headers={"Accept-Language": "en"},
    ).json()
    assert allowed["outcome"] == "allowed" and allowed["consent_required"] is True
    assert "purpose:property-notice" in allowed["deciding_rules"]
    fields = {f["field"]: f for f in allowed["fields"]}
    assert set(fields) == {"phone", "address", "religion"}
    assert fields["address"]["level"] == "building"
    assert fields["religion"]["source"] == "not-covered"
    assert "consent-needed" in {c["code"] for c in allowed["changes"]}
    assert allowed["purpose"]["legal_basis"] == "consent"
    # Asking for another organisation is for auditors.
    other = call(
        server,
        "POST",
        "/v1/decisions/explain",
        company,
        json={"purpose": "subsidy-review", "organisation": CIVIL},
    )
    assert other.status_code == 403


def test_a_past_decision_is_explained_from_the_signed_log(server: DemoServer) -> None:
    token = server.client_token(HEALTH)
    pseudonym = listed(server, HEALTH, "public-health-followup")[0]
    read = call(server, "GET", f"/v1/residents/{pseudonym}", token, "public-health-followup")
    refused = call(server, "GET", f"/v1/residents/{pseudonym}", token, "subsidy-review")
    assert read.status_code == 200 and refused.status_code == 403
    past = call(server, "GET", f"/v1/decisions/{read.headers['Decision-Id']}", token).json()
    assert past["recorded"]["outcome"] == "allowed"
    assert "purpose:public-health-followup" in past["explanation"]["deciding_rules"]
    assert past["explanation"]["policy_revision"] == read.headers["Policy-Revision"]
    denied = call(server, "GET", f"/v1/decisions/{refused.headers['Decision-Id']}", token).json()
    assert denied["explanation"]["outcome"] == "denied"
    assert denied["explanation"]["reason"]["code"] == "no-mandate"
    # The evaluation it came from is an entry of the log, like any other.
    with server.runtime.vault.sessions() as session:
        evaluation = session.scalars(
            select(AuditEntry).where(AuditEntry.entry_id == denied["evaluation_entry"])
        ).one()
    assert evaluation.action == "policy.evaluated" and evaluation.resident_id is None
    # Someone else's decision is not found; an auditor may read it.
    other = server.client_token(CIVIL)
    path = f"/v1/decisions/{read.headers['Decision-Id']}"
    assert call(server, "GET", path, other).status_code == 404
    auditor = server.user("auditor")
    audit_token = server.login(auditor["username"], auditor["password"], "audit:read")
    assert call(server, "GET", path, audit_token["access_token"]).status_code == 200


def test_the_residents_dry_run_matches_what_organisations_get(server: DemoServer) -> None:
    """Run both: the resident's "who can see my data" against each organisation's real read."""
    consented, me = consenting_resident(server)
    dry = call(server, "GET", "/v1/me/visibility", me)
    assert dry.status_code == 200, dry.text
    body = dry.json()
    seen = {
        (c["who"]["organisation"], c["purpose"]): c
        for c in body["combinations"]
        if "worker" not in c["who"]
    }
    assert (COMPANY, "property-notice") in seen
    compared = 0
    for client in server.credentials["clients"]:
        if "residents:read" not in client["scopes"]:
            continue
        organisation = client["organisation"]
        token = server.client_token(organisation)
        pseudonym = server.pseudonym(organisation, consented)
        for purpose in client["purposes"]:
            real = call(server, "GET", f"/v1/residents/{pseudonym}", token, purpose)
            predicted = seen.get((organisation, purpose))
            compared += 1
            if predicted is None:
                assert real.status_code in (403, 404), (organisation, purpose, real.text)
            elif predicted["status"] == "needs-consent":
                assert real.status_code == 403, (organisation, purpose)
                assert real.json()["type"].endswith("/problems/consent-required")
            else:
                assert real.status_code == 200, (organisation, purpose, real.text)
                assert real.json()["treatments"] == predicted["treatments"], (organisation, purpose)
    assert compared >= 8
    # The field view says who sees the phone, and on what basis, in plain words.
    phone = body["fields"]["phone"]["seen_by"]
    assert any(s["who"]["organisation"] == COMPANY and s["legal_basis"] == "consent" for s in phone)
    assert all(s["legal_basis_text"] for s in phone)


def test_auditors_see_what_an_organisation_sees(server: DemoServer) -> None:
    auditor = server.user("auditor")
    token = server.login(auditor["username"], auditor["password"], "audit:read")["access_token"]
    table = call(server, "GET", f"/v1/organisations/{COMPANY}/visibility", token).json()
    rows = {(r["purpose"], r["action"]): r for r in table["items"]}
    notice = rows[("property-notice", "read")]
    assert notice["allowed"] and notice["consent_required"] and notice["identifier"] == "pseudonym"
    assert notice["fields"] == {"address": "generalised", "phone": "masked"}
    assert not rows[("subsidy-review", "read")]["allowed"]
    company = server.client_token(COMPANY)
    path = f"/v1/organisations/{COMPANY}/visibility"
    assert call(server, "GET", path, company).status_code == 403
