"""Consent through real HTTP (issue 5), on SQLite and PostgreSQL.

One demo service per database serves the module. Each test takes residents no other test
uses, so the tests only add to the shared state. Residents get accounts made directly in
the database (the demo cast has only a few), then log in over HTTP like anyone else.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import secrets
import threading
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.exc import DBAPIError

from access.gate import Gate
from access.subjects import Access, Subject
from audit.models import AuditEntry
from consent import ConsentService, Grant, ReceiptInvalid, verify_receipt
from consent.models import Consent, ConsentReceipt, ConsentRevocation
from consent.receipts import b64url, b64url_decode
from consent.services import _fourteenth
from policies import EmbeddedEngine, load_bundle
from tests.demo_server import DemoServer, call, demo_server_fixture, residents_in
from vault.crypto import open_field
from vault.models import (
    Guardianship,
    OrganisationBuilding,
)

COMPANY = "org_anju_property"  # serves every building of cm_xingfu
OTHER_COMPANY = "org_yijia_property"  # serves cm_hexie
PURPOSE = "property-notice"


server = demo_server_fixture("consent-demo", residents=60)


# -- helpers ----------------------------------------------------------------------------------

_taken: dict[int, set[str]] = {}


def fresh_resident(server: DemoServer, community: str = "cm_xingfu") -> str:
    """A resident no test has used, with no consent on record and no guardianship."""
    taken = _taken.setdefault(id(server), set())
    with server.runtime.vault.sessions() as session:
        busy = set(session.scalars(select(Consent.resident_id)))
        busy |= set(session.scalars(select(Guardianship.ward_id)))
        busy |= set(session.scalars(select(Guardianship.guardian_id)))
    for resident_id in residents_in(server, community):
        if resident_id not in taken and resident_id not in busy:
            taken.add(resident_id)
            return resident_id
    raise LookupError("no fresh resident left")


def resident_token(server: DemoServer, resident_id: str) -> str:
    return server.resident_token(resident_id)


def company_read(server: DemoServer, token: str, resident_id: str) -> httpx.Response:
    """The company reads a resident by its own pseudonym, as its lists name them."""
    pseudonym = server.pseudonym(COMPANY, resident_id)
    return call(server, "GET", f"/v1/residents/{pseudonym}", token, PURPOSE)


def grant(server: DemoServer, token: str, **body: Any) -> httpx.Response:
    return call(
        server,
        "POST",
        "/v1/me/consents",
        token,
        json={"recipient": COMPANY, "purpose": PURPOSE, "separate": True, **body},
    )


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["type"].endswith(f"/problems/{slug}")
    return body


def service(server: DemoServer, **purposes: Any) -> ConsentService:
    runtime = server.runtime
    return ConsentService(runtime.vault.store, runtime.audit, **purposes)


def subject_for_client(session: Any, organisation: str) -> Subject:
    buildings = tuple(
        session.scalars(
            select(OrganisationBuilding.building_id).where(
                OrganisationBuilding.organisation_id == organisation
            )
        )
    )
    return Subject(
        type="property_company",
        organisation=organisation,
        buildings=buildings,
        client="test-export",
    )


def keys(server: DemoServer) -> dict[str, Any]:
    response = call(server, "GET", "/v1/receipt-keys", None)
    assert response.status_code == 200
    jwks: dict[str, Any] = response.json()
    return jwks


# -- tests ------------------------------------------------------------------------------------


def test_data_flows_only_with_a_matching_consent(server: DemoServer) -> None:
    company = server.client_token(COMPANY)
    resident = fresh_resident(server)
    assert_problem(company_read(server, company, resident), 403, "consent-required")
    token = resident_token(server, resident)
    # A consent to the other company, or for the other company's residents, does not help.
    other = call(
        server,
        "POST",
        "/v1/me/consents",
        token,
        json={"recipient": OTHER_COMPANY, "purpose": PURPOSE, "separate": True},
    )
    assert other.status_code == 201, other.text
    assert_problem(company_read(server, company, resident), 403, "consent-required")
    granted = grant(server, token, fields=["phone"])
    assert granted.status_code == 201, granted.text
    assert granted.json()["status"] == "active"
    body = company_read(server, company, resident)
    assert body.status_code == 200, body.text
    record = body.json()
    # Masked contact only, and only the field consented to; nothing else is let out.
    assert record["treatments"]["phone"] == "masked"
    assert record["treatments"]["address"] == "denied"
    assert set(record["fields"]) <= {"phone"}
    assert all(t == "denied" for n, t in record["treatments"].items() if n != "phone")
    with server.runtime.vault.sessions() as session:
        stored = server.runtime.vault.store.read(session, resident, ["phone"])
    if "phone" in stored:
        assert record["fields"]["phone"] != stored["phone"]
    entry = next(
        e
        for e in _entries(server, decision_id=body.headers["Decision-Id"])
        if e.outcome == "allowed"
    )
    assert entry.consent_id == granted.json()["consent_id"]
    # The owner's other consent (another company) is on the resident's list; so are the
    # purposes that need no consent, with their legal reference.
    mine = call(server, "GET", "/v1/me/consents", token).json()
    assert {i["recipient"] for i in mine["items"]} == {COMPANY, OTHER_COMPANY}
    statutory = {i["purpose"]: i for i in mine["legal_bases"]}
    assert statutory["subsidy-review"]["requires_consent"] is False
    assert statutory["subsidy-review"]["note"]["en"] == "does not require your consent"
    assert "PIPL" in statutory["subsidy-review"]["legal_reference"]["en"]
    assert PURPOSE not in statutory


def _entries(server: DemoServer, **where: Any) -> list[AuditEntry]:
    with server.runtime.vault.sessions() as session:
        query = select(AuditEntry)
        for column, value in where.items():
            query = query.where(getattr(AuditEntry, column) == value)
        return list(session.scalars(query))


def test_general_consent_never_covers_provision_or_sensitive_fields(server: DemoServer) -> None:
    company = server.client_token(COMPANY)
    resident = fresh_resident(server)
    token = resident_token(server, resident)
    # Art. 23: a property company is another handler; a general consent is not enough.
    general = grant(server, token, separate=False)
    assert general.status_code == 201, general.text
    assert_problem(company_read(server, company, resident), 403, "consent-required")
    # Art. 29: for the residents' committee of the resident's own community, a general
    # consent covers ordinary fields but never a sensitive one.
    committee = "org_rc_xingfu"
    registry = {
        "community-care-offer": {
            "name": {"zh": "社区关爱活动", "en": "Community care offers"},
            "legal_basis": "consent",
            "recipient_types": ["residents_committee"],
            "notice_version": "t1",
            "fields": {"phone": "masked", "health_conditions": "generalised"},
        }
    }
    consents = service(server, purposes=registry)
    wanted = ["phone", "health_conditions"]
    care = "community-care-offer"
    with server.runtime.transaction() as session:
        consents.grant(
            session,
            Grant(
                resident_id=resident,
                recipient=committee,
                purpose=care,
                channel="self",
                recorded_by="t",
            ),
        )
    with server.runtime.vault.sessions() as session:
        cover = consents.consenting(session, committee, care, [resident], wanted)
    assert cover[resident].fields == {"phone"}
    with server.runtime.transaction() as session:
        consents.grant(
            session,
            Grant(
                resident_id=resident,
                recipient=committee,
                purpose=care,
                channel="self",
                recorded_by="t",
                fields=["health_conditions"],
                separate=True,
            ),
        )
    with server.runtime.vault.sessions() as session:
        cover = consents.consenting(session, committee, care, [resident], wanted)
    assert cover[resident].fields == {"phone", "health_conditions"}
    assert len(cover[resident].consent_ids) == 2
    # The other community's committee is another organisation: general consent is void.
    other = "org_rc_hexie"
    with server.runtime.transaction() as session:
        consents.grant(
            session,
            Grant(
                resident_id=resident, recipient=other, purpose=care, channel="self", recorded_by="t"
            ),
        )
    with server.runtime.vault.sessions() as session:
        assert consents.consenting(session, other, care, [resident], wanted) == {}


def test_revocation_holds_for_the_very_next_read_under_concurrent_reads(
    server: DemoServer,
) -> None:
    company = server.client_token(COMPANY)
    resident = fresh_resident(server)
    token = resident_token(server, resident)
    consent_id = grant(server, token).json()["consent_id"]
    assert company_read(server, company, resident).status_code == 200
    results: list[tuple[float, int]] = []
    stop = threading.Event()

    def reader() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not stop.is_set():
                started = time.monotonic()
                response = client.get(
                    f"/v1/residents/{server.pseudonym(COMPANY, resident)}",
                    headers={"Authorization": f"Bearer {company}", "Purpose": PURPOSE},
                )
                results.append((started, response.status_code))

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.4)
    revoked = call(server, "POST", f"/v1/me/consents/{consent_id}/revoke", token)
    committed = time.monotonic()  # the revocation committed before its response was sent
    time.sleep(0.4)
    stop.set()
    for thread in threads:
        thread.join()
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["status"] == "revoked"
    before = [status for started, status in results if started < committed]
    after = [status for started, status in results if started >= committed]
    assert 200 in before
    assert after, "no read started after the revocation"
    assert set(after) == {403}
    # The very next read, sequentially, too; and revoking twice is a conflict.
    assert_problem(company_read(server, company, resident), 403, "consent-required")
    again = call(server, "POST", f"/v1/me/consents/{consent_id}/revoke", token)
    assert_problem(again, 409, "conflict")
    assert _entries(server, action="consent.revoked", consent_id=consent_id)


def test_expiry_is_enforced_by_time(server: DemoServer) -> None:
    company = server.client_token(COMPANY)
    resident = fresh_resident(server)
    token = resident_token(server, resident)
    expires = datetime.now(UTC) + timedelta(seconds=1.5)
    granted = grant(server, token, expires_at=expires.isoformat())
    assert granted.status_code == 201, granted.text
    assert company_read(server, company, resident).status_code == 200
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.2)
    assert_problem(company_read(server, company, resident), 403, "consent-required")
    listed = call(server, "GET", "/v1/me/consents", token).json()["items"]
    assert listed[0]["status"] == "expired"
    past = grant(server, token, expires_at=(datetime.now(UTC) - timedelta(days=1)).isoformat())
    assert_problem(past, 422, "validation-error")


def test_changes_supersede_and_keep_history(server: DemoServer) -> None:
    company = server.client_token(COMPANY)
    resident = fresh_resident(server)
    token = resident_token(server, resident)
    first = grant(server, token, fields=["phone"]).json()["consent_id"]
    second = grant(server, token, fields=["phone", "address"], supersedes=first)
    assert second.status_code == 201, second.text
    record = company_read(server, company, resident).json()
    shown = {"phone": "masked", "address": "generalised"}
    assert record["treatments"] == {**record["treatments"], **shown}
    items = {
        i["consent_id"]: i for i in call(server, "GET", "/v1/me/consents", token).json()["items"]
    }
    assert items[first]["status"] == "superseded"
    assert items[second.json()["consent_id"]]["supersedes"] == first
    assert items[first]["fields"] == ["phone"]  # the old record is unchanged
    stale = grant(server, token, supersedes=first)
    assert_problem(stale, 409, "conflict")
    # The database itself refuses edits and deletions of consent records.
    for statement in (
        update(Consent).where(Consent.id == first).values(fields=["phone", "address"]),
        delete(ConsentRevocation).where(ConsentRevocation.consent_id == first),
    ):
        with pytest.raises(DBAPIError), server.runtime.transaction() as session:
            session.execute(statement)


def test_guardian_consent_for_a_minor_ends_when_the_child_turns_14(server: DemoServer) -> None:
    guardian = server.user("resident", username="resident.guardian")
    token = str(server.login(guardian["username"], guardian["password"], "me")["access_token"])
    ward = guardian["children"][0]
    response = grant(server, token, on_behalf_of=ward)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["channel"] == "guardian"
    assert body["resident_id"] == ward
    assert body["guardian_id"] == guardian["resident_id"]
    with server.runtime.vault.sessions() as session:
        birth = server.runtime.vault.store.read(session, ward, ["birth_date"])["birth_date"]
    turns = _fourteenth(date.fromisoformat(str(birth)))
    assert datetime.fromisoformat(body["expires_at"]) == turns
    consents = service(server)
    with server.runtime.vault.sessions() as session:
        before = consents.consenting(
            session, COMPANY, PURPOSE, [ward], ["phone"], at=turns - timedelta(seconds=1)
        )
        after = consents.consenting(
            session, COMPANY, PURPOSE, [ward], ["phone"], at=turns + timedelta(seconds=1)
        )
    assert ward in before
    assert after == {}
    # The guardian sees the ward's consent; a stranger's resident id is refused.
    mine = call(server, "GET", "/v1/me/consents", token).json()["items"]
    assert body["consent_id"] in {i["consent_id"] for i in mine}
    stranger = fresh_resident(server)
    assert_problem(grant(server, token, on_behalf_of=stranger), 404, "not-found")


def test_assisted_consent_with_evidence(server: DemoServer) -> None:
    worker = server.user("community_worker")
    token = str(
        server.login(worker["username"], worker["password"], "consents:read consents:write")[
            "access_token"
        ]
    )
    resident = fresh_resident(server)
    form = b"%PDF-1.4 signed consent form " + secrets.token_bytes(64)
    body = {
        "resident_id": resident,
        "recipient": COMPANY,
        "purpose": PURPOSE,
        "separate": True,
        "evidence": {
            "content_base64": base64.b64encode(form).decode(),
            "media_type": "application/pdf",
        },
        "witness": "王芳 (SQ-XF-002)",
    }
    response = call(server, "POST", "/v1/consents", token, json=body)
    assert response.status_code == 201, response.text
    consent_id = response.json()["consent_id"]
    assert response.json()["channel"] == "assisted"
    assert response.json()["evidence"]["sha256"] == hashlib.sha256(form).hexdigest()
    with server.runtime.vault.sessions() as session:
        row = session.get(Consent, consent_id)
        assert row is not None and row.evidence_blob is not None
        assert form not in row.evidence_blob  # sealed, not stored in clear
        assert row.recorded_by == worker["username"]
        key = server.runtime.vault.store.data_keys.get(session, resident, 1)
        assert open_field(key, f"consent_evidence:{consent_id}", row.evidence_blob) == form
    listed = call(server, "GET", "/v1/consents", token, params={"resident_id": resident})
    assert listed.status_code == 200
    assert listed.json()["items"][0]["evidence"]["witness"] == body["witness"]
    # The company gets the consented data, and nothing of the form.
    company = server.client_token(COMPANY)
    read = company_read(server, company, resident)
    assert read.status_code == 200
    assert base64.b64encode(form).decode()[:40] not in read.text
    assert_problem(
        call(server, "GET", f"/v1/consents/{consent_id}/receipt", company), 404, "not-found"
    )
    event = _entries(server, action="consent.granted", consent_id=consent_id)[0]
    assert event.user == worker["username"] and event.on_behalf_of == resident
    # Bad inputs: no evidence, bad base64, a resident outside the worker's area.
    assert_problem(
        call(
            server,
            "POST",
            "/v1/consents",
            token,
            json={k: v for k, v in body.items() if k != "evidence"},
        ),
        422,
        "validation-error",
    )
    bad = {**body, "evidence": {"content_base64": "***", "media_type": "application/pdf"}}
    assert_problem(call(server, "POST", "/v1/consents", token, json=bad), 422, "validation-error")
    outside = {**body, "resident_id": fresh_resident(server, "cm_hexie")}
    assert_problem(call(server, "POST", "/v1/consents", token, json=outside), 404, "not-found")


def test_receipts_verify_offline_and_fail_when_altered(server: DemoServer) -> None:
    resident = fresh_resident(server)
    token = resident_token(server, resident)
    consent_id = grant(server, token).json()["consent_id"]
    response = call(server, "GET", f"/v1/consents/{consent_id}/receipt", token)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/jose")
    jwks = keys(server)
    receipt = verify_receipt(response.text, jwks)
    for name in (
        "version",
        "jurisdiction",
        "consentTimestamp",
        "collectionMethod",
        "consentReceiptID",
        "piiPrincipalId",
        "piiControllers",
        "policyUrl",
        "services",
        "sensitive",
        "spiCat",
    ):
        assert name in receipt
    assert receipt["piiPrincipalId"] == resident and receipt["event"] == "granted"
    purpose = receipt["services"][0]["purposes"][0]
    assert purpose["thirdPartyDisclosure"] is True and purpose["consentType"] == "EXPLICIT"
    header, payload, signature = response.text.split(".")
    altered = {**receipt, "fields": ["phone", "address", "religion"]}
    forged = b64url(json.dumps(altered, separators=(",", ":")).encode())
    with pytest.raises(ReceiptInvalid):
        verify_receipt(f"{header}.{forged}.{signature}", jwks)
    flipped = bytearray(b64url_decode(signature))
    flipped[0] ^= 1
    with pytest.raises(ReceiptInvalid):
        verify_receipt(f"{header}.{payload}.{b64url(bytes(flipped))}", jwks)
    with pytest.raises(ReceiptInvalid):
        verify_receipt(response.text, {"keys": []})
    # Revocation issues its own receipt, which is then the one served.
    call(server, "POST", f"/v1/me/consents/{consent_id}/revoke", token)
    after = call(server, "GET", f"/v1/consents/{consent_id}/receipt", token)
    assert verify_receipt(after.text, jwks)["event"] == "revoked"
    with server.runtime.vault.sessions() as session:
        events = set(
            session.scalars(
                select(ConsentReceipt.event).where(ConsentReceipt.consent_id == consent_id)
            )
        )
    assert events == {"granted", "revoked"}
    # Someone else's receipt is not found.
    other = resident_token(server, fresh_resident(server))
    assert_problem(
        call(server, "GET", f"/v1/consents/{consent_id}/receipt", other), 404, "not-found"
    )


def test_export_and_list_leave_out_non_consenting_residents(server: DemoServer) -> None:
    company = server.client_token(COMPANY)
    resident = fresh_resident(server)
    token = resident_token(server, resident)
    assert grant(server, token).status_code == 201
    everyone = residents_in(server, "cm_xingfu")
    with server.runtime.vault.sessions() as session:
        consenting = service(server).consenting(
            session, COMPANY, PURPOSE, everyone, ["phone", "address"]
        )
    assert resident in consenting
    # The shipped policy lets property companies read and list, not export; an export
    # with a policy that allows it goes through the same gate and leaves out the rest.
    data = copy.deepcopy(load_bundle().data)
    data["purposes"][PURPOSE]["actions"] = [*data["purposes"][PURPOSE]["actions"], "export"]
    engine = EmbeddedEngine(load_bundle(data=data))
    try:
        gate = Gate(server.runtime, engine)
        with server.runtime.vault.sessions() as session:
            subject = subject_for_client(session, COMPANY)
        access = Access(subject=subject, purpose=PURPOSE, request_id="req_test_export")
        _, batches, summary = gate.export(access, batch_size=7)
        exported = [view for batch in batches for view in batch]
    finally:
        engine.close()
    assert {v.resident_id for v in exported} == {server.pseudonym(COMPANY, r) for r in consenting}
    assert summary == {"rows": len(consenting), "left_out": len(everyone) - len(consenting)}
    listing = call(server, "GET", "/v1/residents", company, PURPOSE, params={"limit": 500})
    assert listing.status_code == 200
    assert listing.json()["left_out"] == len(everyone) - len(consenting)
    listed = {i["resident_id"] for i in listing.json()["items"]}
    assert listed == {server.pseudonym(COMPANY, r) for r in consenting}


def test_consent_requests_from_organisations(server: DemoServer) -> None:
    company = server.client_token(COMPANY)
    resident = fresh_resident(server)
    token = resident_token(server, resident)
    asked = call(
        server,
        "POST",
        "/v1/consent-requests",
        company,
        json={
            "resident_id": server.pseudonym(COMPANY, resident),
            "purpose": PURPOSE,
            "message": "停水通知",
        },
    )
    assert asked.status_code == 201, asked.text
    assert asked.json()["resident_id"] == server.pseudonym(COMPANY, resident)
    # The vault id itself opens nothing for an organisation.
    by_vault_id = call(
        server,
        "POST",
        "/v1/consent-requests",
        company,
        json={"resident_id": resident, "purpose": PURPOSE},
    )
    assert_problem(by_vault_id, 404, "not-found")
    request_id = asked.json()["request_id"]
    pending = call(server, "GET", "/v1/me/consent-requests", token).json()["items"]
    assert [(r["request_id"], r["status"]) for r in pending] == [(request_id, "pending")]
    answered = call(
        server, "POST", f"/v1/me/consent-requests/{request_id}/answer", token, json={"accept": True}
    )
    assert answered.status_code == 200, answered.text
    assert answered.json()["status"] == "granted"
    assert company_read(server, company, resident).status_code == 200
    again = call(
        server,
        "POST",
        f"/v1/me/consent-requests/{request_id}/answer",
        token,
        json={"accept": False},
    )
    assert_problem(again, 409, "conflict")
    # A refusal records nothing but the answer; the company still sees nothing of another.
    second = fresh_resident(server)
    second_token = resident_token(server, second)
    asked = call(
        server,
        "POST",
        "/v1/consent-requests",
        company,
        json={"resident_id": server.pseudonym(COMPANY, second), "purpose": PURPOSE},
    ).json()
    refused = call(
        server,
        "POST",
        f"/v1/me/consent-requests/{asked['request_id']}/answer",
        second_token,
        json={"accept": False},
    )
    assert refused.json()["status"] == "refused"
    assert_problem(company_read(server, company, second), 403, "consent-required")
    # Refusing never blocks services that do not depend on consent: the resident's own
    # record still reads.
    assert call(server, "GET", "/v1/me", second_token).status_code == 200
    # Outside the company's buildings: not found; a statutory purpose: nothing to ask.
    outside = fresh_resident(server, "cm_hexie")
    assert_problem(
        call(
            server,
            "POST",
            "/v1/consent-requests",
            company,
            json={"resident_id": server.pseudonym(COMPANY, outside), "purpose": PURPOSE},
        ),
        404,
        "not-found",
    )
    assert_problem(
        call(
            server,
            "POST",
            "/v1/consent-requests",
            company,
            json={"resident_id": server.pseudonym(COMPANY, second), "purpose": "subsidy-review"},
        ),
        403,  # outside the company's mandate: policy refuses before anything else
        "policy-denied",
    )
    department = server.client_token("org_civil_affairs")
    assert_problem(
        call(
            server,
            "POST",
            "/v1/consent-requests",
            department,
            json={
                "resident_id": server.pseudonym("org_civil_affairs", second),
                "purpose": "subsidy-review",
            },
        ),
        422,  # its own statutory purpose: there is no consent to ask for
        "validation-error",
    )
    assert _entries(server, action="consent.requested", resident_id=second)


def test_bad_input_is_a_problem(server: DemoServer) -> None:
    resident = fresh_resident(server)
    token = resident_token(server, resident)
    cases: list[dict[str, Any]] = [
        {"purpose": "no-such-purpose"},
        {"purpose": "subsidy-review"},
        {"recipient": "org_nowhere"},
        {"recipient": "org_civil_affairs"},
        {"fields": ["religion"]},
        {"fields": ["no_such_field"]},
        {"notice_version": "1999-01-01"},
        {"expires_at": "not a time"},
    ]
    for case in cases:
        assert_problem(grant(server, token, **case), 422, "validation-error")
    assert_problem(call(server, "POST", "/v1/me/consents/cn_nope/revoke", token), 404, "not-found")
    company = server.client_token(COMPANY)
    assert_problem(call(server, "GET", "/v1/me/consents", company), 403, "insufficient-scope")
    assert_problem(call(server, "POST", "/v1/consents", token, json={}), 403, "insufficient-scope")


def test_demo_has_a_consent_to_a_property_company(server: DemoServer) -> None:
    with server.runtime.vault.sessions() as session:
        demo = session.scalars(select(Consent).where(Consent.recorded_by == "demo")).all()
    assert demo and demo[0].recipient in {COMPANY, OTHER_COMPANY}
    with server.runtime.vault.sessions() as session:
        receipt = session.scalars(
            select(ConsentReceipt.jws).where(ConsentReceipt.consent_id == demo[0].id)
        ).first()
    assert receipt is not None
    assert verify_receipt(receipt, keys(server))["consentId"] == demo[0].id


def test_a_worker_revokes_at_the_counter_and_the_next_read_is_refused(
    server: DemoServer,
) -> None:
    worker = server.user("community_worker")
    token = str(
        server.login(worker["username"], worker["password"], "consents:read consents:write")[
            "access_token"
        ]
    )
    resident = fresh_resident(server)
    form = b"%PDF-1.4 signed form " + secrets.token_bytes(16)
    granted = call(
        server,
        "POST",
        "/v1/consents",
        token,
        json={
            "resident_id": resident,
            "recipient": COMPANY,
            "purpose": PURPOSE,
            "separate": True,
            "evidence": {"content_base64": base64.b64encode(form).decode()},
            "witness": "李明 (SQ-XF-003)",
        },
    )
    assert granted.status_code == 201, granted.text
    consent_id = granted.json()["consent_id"]
    company = server.client_token(COMPANY)
    assert company_read(server, company, resident).status_code == 200
    revoked = call(
        server,
        "POST",
        f"/v1/consents/{consent_id}/revoke",
        token,
        json={"witness": "李明 (SQ-XF-003)"},
    )
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["receipt"]
    assert_problem(company_read(server, company, resident), 403, "consent-required")
    (event,) = _entries(server, action="consent.revoked", consent_id=consent_id)
    assert event.user == worker["username"] and event.on_behalf_of == resident
    assert event.details["witness"] == "李明 (SQ-XF-003)"
    again = call(server, "POST", f"/v1/consents/{consent_id}/revoke", token, json={"witness": "x"})
    assert again.status_code == 409


def test_workers_consent_actions_are_reported_to_auditors(server: DemoServer) -> None:
    worker = server.user("community_worker")
    token = str(
        server.login(worker["username"], worker["password"], "consents:read consents:write")[
            "access_token"
        ]
    )
    resident = fresh_resident(server)
    granted = call(
        server,
        "POST",
        "/v1/consents",
        token,
        json={
            "resident_id": resident,
            "recipient": COMPANY,
            "purpose": PURPOSE,
            "separate": True,
            "evidence": {"content_base64": base64.b64encode(b"%PDF form").decode()},
            "witness": "W",
        },
    )
    assert granted.status_code == 201
    auditor = server.user("auditor")
    audit_token = str(
        server.login(auditor["username"], auditor["password"], "audit:read")["access_token"]
    )
    report = call(server, "GET", "/v1/audit/reports/consent-actions", audit_token)
    assert report.status_code == 200, report.text
    rows = [r for r in report.json()["items"] if r["user"] == worker["username"]]
    assert any(r["action"] == "consent.granted" and r["count"] >= 1 for r in rows)
    server.runtime.audit.integrate(server.runtime.vault.sessions)
    searched = call(
        server,
        "GET",
        "/v1/audit/entries",
        audit_token,
        params={"action": "consent.*", "user": worker["username"]},
    )
    assert searched.status_code == 200
    assert searched.json()["items"]
    assert all(i["action"].startswith("consent.") for i in searched.json()["items"])
