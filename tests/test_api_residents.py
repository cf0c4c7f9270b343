"""The resident API through real HTTP: each demo role inside and outside its scope.

One demo service per database (SQLite, PostgreSQL) serves the whole module; tests only add
to it (reads, and writes to their own residents), so they do not disturb one another.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from sqlalchemy import func, select, text

from audit.models import AuditEntry
from consent.models import Consent
from tests.demo_server import DemoServer, demo_server_fixture, residents_where

PURPOSE = "Purpose"


server = demo_server_fixture("http-demo")


# -- helpers ----------------------------------------------------------------------------------


def entries_for(server: DemoServer, **where: Any) -> list[AuditEntry]:
    with server.runtime.vault.sessions() as session:
        query = select(AuditEntry)
        for column, value in where.items():
            query = query.where(getattr(AuditEntry, column) == value)
        return list(session.scalars(query))


def get(
    server: DemoServer, path: str, token: str | None, purpose: str | None = None, **params: Any
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if purpose:
        headers[PURPOSE] = purpose
    return httpx.get(f"{server.url}{path}", headers=headers, params=params, timeout=30)


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["type"].endswith(f"/problems/{slug}")
    return body


# -- departments --------------------------------------------------------------------------------


def test_civil_affairs_sees_welfare_fields_but_not_religion(server: DemoServer) -> None:
    token = server.client_token("org_civil_affairs")
    resident = residents_where(server, community_id="cm_hexie")[0]
    pseudonym = server.pseudonym("org_civil_affairs", resident)
    response = get(server, f"/v1/residents/{pseudonym}", token, "subsidy-review")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["resident_id"] == pseudonym
    assert body["treatments"]["low_income_status"] == "clear"
    assert body["treatments"]["religion"] == "denied"
    assert "religion" not in body["fields"]
    with server.runtime.vault.sessions() as session:
        stored = server.runtime.vault.store.read(session, resident, ["low_income_status"])
    assert body["fields"]["low_income_status"] == stored["low_income_status"]
    decision_id = response.headers["Decision-Id"]
    assert response.headers["Policy-Revision"].startswith("rev-")
    entries = entries_for(server, decision_id=decision_id)
    assert len(entries) == 1
    entry = entries[0]
    assert (entry.resident_id, entry.outcome, entry.purpose) == (
        resident,
        "allowed",
        "subsidy-review",
    )
    assert entry.fields["religion"] == "denied" and entry.fields["low_income_status"] == "clear"
    assert entry.legal_basis == "statutory-duty" and entry.organisation == "org_civil_affairs"
    assert entry.resident_pseudonym == pseudonym  # the log records both ids


def test_purpose_is_checked_in_the_documented_order(server: DemoServer) -> None:
    token = server.client_token("org_civil_affairs")
    resident = server.pseudonym("org_civil_affairs", residents_where(server)[0])
    assert_problem(get(server, f"/v1/residents/{resident}", token), 400, "purpose-required")
    assert_problem(
        get(server, f"/v1/residents/{resident}", token, "fortune-telling"), 422, "unknown-purpose"
    )
    denied = assert_problem(
        get(server, f"/v1/residents/{resident}", token, "property-notice"), 403, "policy-denied"
    )
    assert denied.get("detail")
    # The query parameter works too, for links in pages.
    ok = httpx.get(
        f"{server.url}/v1/residents/{resident}",
        params={"purpose": "subsidy-review"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert ok.status_code == 200


def test_denied_attempts_are_recorded(server: DemoServer) -> None:
    token = server.client_token("org_health")
    resident = residents_where(server)[1]
    response = get(server, f"/v1/residents/{resident}", token, "subsidy-review")
    assert_problem(response, 403, "policy-denied")
    (entry,) = entries_for(server, decision_id=response.headers["Decision-Id"])
    assert (entry.outcome, entry.resident_id, entry.fields) == ("denied", resident, {})


def test_wrong_scope_missing_and_bad_tokens(server: DemoServer) -> None:
    resident = residents_where(server)[0]
    path = f"/v1/residents/{resident}"
    stats_only = server.client_token("org_civil_affairs", scope="stats:read")
    forbidden = get(server, path, stats_only, "subsidy-review")
    assert_problem(forbidden, 403, "insufficient-scope")
    assert "insufficient_scope" in forbidden.headers["www-authenticate"]
    missing = get(server, path, None, "subsidy-review")
    assert_problem(missing, 401, "invalid-token")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    token = server.client_token("org_civil_affairs")
    header, payload, signature = token.split(".")
    tampered = f"{header}.{payload[:-4]}AAAA.{signature}"
    assert_problem(get(server, path, tampered, "subsidy-review"), 401, "invalid-token")
    assert_problem(get(server, path, "not-a-jwt", "subsidy-review"), 401, "invalid-token")


def test_token_revocation_takes_effect_on_the_next_request(server: DemoServer) -> None:
    client = server.client("org_civil_affairs")
    token = server.client_token("org_civil_affairs")
    resident = server.pseudonym("org_civil_affairs", residents_where(server)[0])
    assert get(server, f"/v1/residents/{resident}", token, "subsidy-review").status_code == 200
    revoked = httpx.post(
        f"{server.url}/oauth/revoke",
        data={"token": token},
        auth=(client["client_id"], client["client_secret"]),
    )
    assert revoked.status_code == 200
    assert_problem(
        get(server, f"/v1/residents/{resident}", token, "subsidy-review"), 401, "invalid-token"
    )


def test_list_search_and_export_stay_in_scope_and_are_counted(server: DemoServer) -> None:
    token = server.client_token("org_civil_affairs")
    everyone = residents_where(server)
    listed: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 25}
        if cursor:
            params["cursor"] = cursor
        page = get(server, "/v1/residents", token, "subsidy-review", **params)
        assert page.status_code == 200, page.text
        decision_id = page.headers["Decision-Id"]
        body = page.json()
        listed += [item["resident_id"] for item in body["items"]]
        assert len(entries_for(server, decision_id=decision_id)) == len(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert listed == [server.pseudonym("org_civil_affairs", r) for r in everyone]

    with server.runtime.vault.sessions() as session:
        phone = server.runtime.vault.store.read(session, everyone[3], ["phone"])["phone"]
    found = httpx.post(
        f"{server.url}/v1/residents/search",
        json={"phone": phone},
        headers={"Authorization": f"Bearer {token}", PURPOSE: "subsidy-review"},
    )
    assert found.status_code == 200, found.text
    found_ids = [i["resident_id"] for i in found.json()["items"]]
    assert server.pseudonym("org_civil_affairs", everyone[3]) in found_ids
    assert phone not in str(found.request.url)

    export = httpx.get(
        f"{server.url}/v1/exports/residents",
        params={"format": "ndjson", "community": "cm_xingfu", "fields": "name,low_income_status"},
        headers={
            "Authorization": f"Bearer {token}",
            PURPOSE: "subsidy-review",
            # Bulk reads of sensitive fields need a reason, percent-encoded UTF-8.
            "Justification": quote("年度低保复核（2026）"),
        },
        timeout=60,
    )
    assert export.status_code == 200, export.text
    rows = [json.loads(line) for line in export.text.splitlines()]
    exported = [r["resident_id"] for r in rows]
    real = {
        server.pseudonym("org_civil_affairs", r)
        for r in residents_where(server, community_id="cm_xingfu")
    }
    # Everyone in scope once, in the export's own keyed order, beside a few fictional decoys
    # that trace a leak (docs/traceable-exports.md).
    assert real <= set(exported) and len(set(exported)) == len(exported) > len(real)
    assert all(set(r["fields"]) <= {"name", "low_income_status"} for r in rows)
    assert len(entries_for(server, decision_id=export.headers["Decision-Id"])) == len(rows)
    summary = get(server, f"/v1/exports/{export.headers['Export-Id']}", token).json()
    assert (summary["rows"], summary["left_out"], summary["state"]) == (len(rows), 0, "complete")


# -- property companies -----------------------------------------------------------------------


def test_property_company_needs_consent_and_sees_only_masked_contact_fields(
    server: DemoServer,
) -> None:
    token = server.client_token("org_anju_property")
    own = residents_where(server, community_id="cm_xingfu")
    other = residents_where(server, community_id="cm_hexie")
    # The demo holds a consent to a property company (API.md); find who consented.
    with server.runtime.vault.sessions() as session:
        consenting = set(
            session.scalars(
                select(Consent.resident_id).where(Consent.recipient == "org_anju_property")
            )
        ) & set(own)
    unconsented = [r for r in own if r not in consenting]

    def named(resident: str) -> str:
        return server.pseudonym("org_anju_property", resident)

    inside = get(server, f"/v1/residents/{named(unconsented[0])}", token, "property-notice")
    outside = get(server, f"/v1/residents/{named(other[0])}", token, "property-notice")
    # Without a consent the resident is not shown, and the two answers do not differ.
    assert_problem(inside, 403, "consent-required")
    assert_problem(outside, 403, "consent-required")
    listing = get(server, "/v1/residents", token, "property-notice", limit=500)
    assert listing.status_code == 200
    items = listing.json()["items"]
    assert {i["resident_id"] for i in items} == {named(r) for r in consenting}
    for item in items:
        assert {n for n, t in item["treatments"].items() if t != "denied"} <= {"phone", "address"}
        assert set(item["treatments"].values()) <= {"masked", "generalised", "denied"}
        assert item["treatments"].get("address") in (None, "generalised", "denied")
    assert listing.json()["left_out"] == len(own) - len(consenting)


# -- people -----------------------------------------------------------------------------------


def test_grid_worker_sees_own_grid_only_with_sensitive_fields_masked(server: DemoServer) -> None:
    worker = next(
        u
        for u in server.credentials["users"]
        if u["role"] == "grid_worker" and u["jurisdiction"]["grids"] == ["gd_xf_1"]
    )
    token = server.login(worker["username"], worker["password"], "residents:read")["access_token"]
    mine = residents_where(server, grid_id="gd_xf_1")
    theirs = residents_where(server, grid_id="gd_hx_1")
    ok = get(server, f"/v1/residents/{mine[0]}", token, "grid-service")
    assert ok.status_code == 200, ok.text
    treatments = ok.json()["treatments"]
    catalogue = server.runtime.vault.store.catalogue
    for spec in catalogue:
        if spec.sensitive:
            assert treatments[spec.name] in ("masked", "generalised", "denied"), spec.name
    outside = get(server, f"/v1/residents/{theirs[0]}", token, "grid-service")
    nowhere = get(server, "/v1/residents/r_0000000000000000", token, "grid-service")
    assert_problem(outside, 404, "not-found")
    assert_problem(nowhere, 404, "not-found")
    assert outside.json() == nowhere.json()
    listed = get(server, "/v1/residents", token, "grid-service", limit=500).json()["items"]
    assert [i["resident_id"] for i in listed] == mine


def test_resident_sees_own_record_and_children_but_nobody_else(server: DemoServer) -> None:
    guardian = next(
        u for u in server.credentials["users"] if u["role"] == "resident" and u.get("children")
    )
    tokens = server.login(guardian["username"], guardian["password"], "me")
    token = tokens["access_token"]
    me = get(server, "/v1/me", token)
    assert me.status_code == 200, me.text
    assert me.json()["resident_id"] == guardian["resident_id"]
    assert set(me.json()["treatments"].values()) == {"clear"}
    children = get(server, "/v1/me/children", token)
    assert [c["resident_id"] for c in children.json()["items"]] == guardian["children"]
    other = residents_where(server)[0]
    assert_problem(get(server, f"/v1/residents/{other}", token), 403, "insufficient-scope")
    # The page lists integrated entries; integrate now rather than wait for the loop's tick.
    server.runtime.audit.checkpoint(server.runtime.vault.sessions)
    accesses = get(server, "/v1/me/accesses", token).json()["items"]
    assert accesses and all(a["resident_id"] == guardian["resident_id"] for a in accesses)


def test_auditor_reads_the_log_never_values(server: DemoServer) -> None:
    auditor = server.user("auditor")
    token = server.login(auditor["username"], auditor["password"], "audit:read")["access_token"]
    resident = residents_where(server)[0]
    assert_problem(
        get(server, f"/v1/residents/{resident}", token, "subsidy-review"), 403, "insufficient-scope"
    )
    get(
        server,
        f"/v1/residents/{resident}",
        server.client_token("org_civil_affairs"),
        "subsidy-review",
    )
    server.runtime.audit.integrate(server.runtime.vault.sessions)
    entries = get(server, "/v1/audit/entries", token, resident_id=resident)
    assert entries.status_code == 200, entries.text
    items = entries.json()["items"]
    assert items and all(i["resident_id"] == resident for i in items)
    with server.runtime.vault.sessions() as session:
        name = server.runtime.vault.store.read(session, resident, ["name"])["name"]
    assert name not in entries.text
    csv_export = get(server, "/v1/audit/entries", token, resident_id=resident, format="csv")
    assert csv_export.text.startswith("index,recorded_at")


# -- writes and bad input --------------------------------------------------------------------


def test_writes_are_validated_audited_and_field_checked(server: DemoServer) -> None:
    worker = server.user("community_worker")
    token = server.login(worker["username"], worker["password"], "residents:read residents:write")[
        "access_token"
    ]
    resident = residents_where(server, community_id="cm_xingfu")[-1]
    headers = {"Authorization": f"Bearer {token}", PURPOSE: "counter-service"}
    bad = httpx.patch(
        f"{server.url}/v1/residents/{resident}",
        headers=headers,
        json={"fields": {"phone": "12345"}},
    )
    body = assert_problem(bad, 422, "validation-error")
    assert body["errors"][0]["field"] == "phone"
    good = httpx.patch(
        f"{server.url}/v1/residents/{resident}",
        headers=headers,
        json={"fields": {"phone": "13600001111"}},
    )
    assert good.status_code == 200, good.text
    (entry,) = entries_for(server, decision_id=good.headers["Decision-Id"])
    assert entry.fields == {"phone": "written"} and entry.action == "write"
    with server.runtime.vault.sessions() as session:
        provenance = server.runtime.vault.store.provenance(session, resident)["phone"]
    assert provenance.written_by == worker["username"]


def test_oversized_body_is_refused(server: DemoServer) -> None:
    token = server.client_token("org_civil_affairs")
    response = httpx.post(
        f"{server.url}/v1/residents/search",
        headers={"Authorization": f"Bearer {token}", PURPOSE: "subsidy-review"},
        content=b'{"phone": "' + b"1" * 2_000_000 + b'"}',
    )
    assert_problem(response, 413, "payload-too-large")


def test_purposes_and_fields_are_public_metadata(server: DemoServer) -> None:
    purposes = httpx.get(f"{server.url}/v1/purposes").json()["items"]
    codes = {p["code"]: p for p in purposes}
    assert codes["subsidy-review"]["legal_basis"] == "statutory-duty"
    assert codes["property-notice"]["legal_basis"] == "consent"
    fields = httpx.get(f"{server.url}/v1/fields").json()["items"]
    assert {f["name"] for f in fields} == set(server.runtime.vault.store.catalogue.names)


def test_no_data_leaves_without_its_audit_entry(server: DemoServer, tmp_path: Path) -> None:
    token = server.client_token("org_civil_affairs")
    resident = residents_where(server)[2]
    engine = server.runtime.vault.engine
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(
                text(
                    "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE "
                    "plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$"
                )
            )
            connection.execute(
                text(
                    "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_entries "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_audit()"
                )
            )
        else:
            connection.execute(
                text(
                    "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_entries "
                    "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
                )
            )
    try:
        response = get(server, f"/v1/residents/{resident}", token, "subsidy-review")
        assert_problem(response, 503, "audit-unavailable")
        with server.runtime.vault.sessions() as session:
            name = server.runtime.vault.store.read(session, resident, ["name"])["name"]
        assert name not in response.text
    finally:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "DROP TRIGGER refuse_audit"
                    + (" ON audit_entries" if engine.dialect.name == "postgresql" else "")
                )
            )
    with server.runtime.vault.sessions() as session:
        total = session.scalar(select(func.count()).select_from(AuditEntry))
    assert total


def test_auditor_reports_and_the_policy_revision_on_record(server: DemoServer) -> None:
    auditor = server.user("auditor")
    token = server.login(auditor["username"], auditor["password"], "audit:read")["access_token"]
    health = server.client_token("org_health")
    resident = residents_where(server)[4]
    refused = get(server, f"/v1/residents/{resident}", health, "subsidy-review")
    assert refused.status_code == 403
    denied = get(server, "/v1/audit/reports/denied", token, organisation="org_health").json()
    assert denied["total"] >= 1
    assert all(item["outcome"] == "denied" for item in denied["items"])
    assert resident in {item["resident_id"] for item in denied["items"]}
    per_day = get(server, "/v1/audit/reports/accesses-per-day", token).json()["items"]
    assert any(row["organisation"] == "org_health" and row["count"] >= 1 for row in per_day)
    assert_problem(get(server, "/v1/audit/reports/horoscope", token), 404, "not-found")
    (revision,) = entries_for(server, action="policy.revision_in_force")
    assert revision.details["revision"] == refused.headers["Policy-Revision"]


def test_openapi_documents_scopes_and_purposes(server: DemoServer) -> None:
    schema = httpx.get(f"{server.url}/openapi.json").json()
    read = schema["paths"]["/v1/residents/{resident_id}"]["get"]
    assert read["security"] == [{"oauth2": ["residents:read"]}]
    assert "subsidy-review" in read["x-purposes"]
    assert schema["paths"]["/v1/audit/entries"]["get"]["security"] == [{"oauth2": ["audit:read"]}]
    flows = schema["components"]["securitySchemes"]["oauth2"]["flows"]
    assert set(flows) == {"clientCredentials", "authorizationCode"}


def test_every_resident_data_path_writes_exactly_its_entries(server: DemoServer) -> None:
    """Search: one entry per resident returned, or one no-match entry. Me: one. Children:
    one per child. Each entry carries the request's Decision-Id."""
    token = server.client_token("org_civil_affairs")
    headers = {"Authorization": f"Bearer {token}", PURPOSE: "subsidy-review"}
    resident = residents_where(server)[5]
    with server.runtime.vault.sessions() as session:
        id_number = server.runtime.vault.store.read(session, resident, ["id_number"])["id_number"]
    found = httpx.post(
        f"{server.url}/v1/residents/search", json={"id_number": id_number}, headers=headers
    )
    assert [i["resident_id"] for i in found.json()["items"]] == [
        server.pseudonym("org_civil_affairs", resident)
    ]
    (entry,) = entries_for(server, decision_id=found.headers["Decision-Id"])
    assert (entry.action, entry.resident_id) == ("search", resident)
    nothing = httpx.post(
        f"{server.url}/v1/residents/search", json={"phone": "13000000000"}, headers=headers
    )
    assert nothing.json()["items"] == []
    (miss,) = entries_for(server, decision_id=nothing.headers["Decision-Id"])
    assert (miss.resident_id, miss.reason) == (None, "no-match")

    guardian = next(
        u for u in server.credentials["users"] if u["role"] == "resident" and u.get("children")
    )
    me_token = server.login(guardian["username"], guardian["password"], "me")["access_token"]
    mine = get(server, "/v1/me", me_token)
    assert len(entries_for(server, decision_id=mine.headers["Decision-Id"])) == 1
    children = get(server, "/v1/me/children", me_token)
    child_entries = entries_for(server, decision_id=children.headers["Decision-Id"])
    assert sorted(e.resident_id for e in child_entries) == sorted(guardian["children"])


def test_each_purpose_has_a_plain_language_notice(server: DemoServer) -> None:
    purposes = {p["code"]: p for p in httpx.get(f"{server.url}/v1/purposes").json()["items"]}
    property_notice = purposes["property-notice"]["notice"]
    assert property_notice["version"] == purposes["property-notice"]["notice_version"]
    assert "同意" in property_notice["zh"] and "consent" in property_notice["en"]
    assert "手机号码" in property_notice["zh"]
    subsidy = purposes["subsidy-review"]["notice"]
    assert "不需要您的同意" in subsidy["zh"] and "宗教信仰" not in subsidy["zh"]
