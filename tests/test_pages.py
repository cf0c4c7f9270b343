"""The pages without a browser: security headers, cookie flags, CSRF refusals, the login
flow's state check, and the audit entries page views write (the same as the API's)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from access.models import CorrectionRequest
from api.http.app import create_app
from audit.models import AuditEntry
from consent.models import Consent, ConsentRevocation
from tests.browser.server import hidden_fields, prepare, sign_in
from vault.models import Building, Household, OrganisationBuilding, Resident, Room

ORIGIN = "https://testserver"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, Any]]]:
    home = tmp_path_factory.mktemp("pages")
    settings, credentials = prepare(home / "home", f"sqlite:///{home / 'vault.db'}", ORIGIN)
    app = create_app(settings)
    with TestClient(app, base_url=ORIGIN) as client:
        yield client, credentials


@pytest.fixture
def client(served: tuple[TestClient, dict[str, Any]]) -> TestClient:
    served[0].cookies.clear()
    return served[0]


@pytest.fixture
def cast(served: tuple[TestClient, dict[str, Any]]) -> dict[str, Any]:
    return served[1]


def _user(cast: dict[str, Any], role: str, **match: Any) -> dict[str, Any]:
    return next(
        u
        for u in cast["users"]
        if u["role"] == role and all(u.get(k) == v for k, v in match.items())
    )


def _runtime(client: TestClient) -> Any:
    return client.app.state.runtime  # type: ignore[attr-defined]


def _csrf(client: TestClient, path: str) -> str:
    return hidden_fields(client.get(path).text)["csrf_token"]


def _entries(client: TestClient, **where: Any) -> list[AuditEntry]:
    with _runtime(client).vault.sessions() as session:
        query = select(AuditEntry)
        for name, value in where.items():
            query = query.where(getattr(AuditEntry, name) == value)
        return list(session.scalars(query.order_by(AuditEntry.recorded_at)))


def test_pages_send_a_strict_csp_and_no_inline_script(client: TestClient) -> None:
    response = client.get("/portal/")
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    assert not re.search(r"<script(?![^>]*\bsrc=)", response.text), "inline script"
    assert not re.search(r"\sstyle=", response.text), "inline style"
    assert '<html lang="zh-CN"' in response.text
    assert client.get("/pages-static/verify.js").status_code == 200


def test_session_cookie_is_secure_httponly_strict_and_changes_at_login(
    client: TestClient, cast: dict[str, Any]
) -> None:
    client.get("/portal/login", follow_redirects=False)
    before = client.cookies.get("__Host-rv_pages")
    resident = _user(cast, "resident", username="resident1")
    landed = sign_in(client, "portal", resident["username"], resident["password"])
    assert landed.status_code == 200
    assert str(landed.url) == f"{ORIGIN}/portal/"
    set_cookie = next(
        r.headers["set-cookie"]
        for r in landed.history
        if "rv_pages" in r.headers.get("set-cookie", "")
    )
    assert set_cookie.startswith("__Host-rv_pages=")
    lowered = set_cookie.lower()
    assert "secure" in lowered and "httponly" in lowered and "samesite=strict" in lowered
    assert "path=/" in lowered
    assert client.cookies.get("__Host-rv_pages") != before
    assert "access_token" not in landed.text and "eyJ" not in landed.text


def test_callback_refuses_a_state_it_did_not_issue(client: TestClient) -> None:
    client.get("/portal/login", follow_redirects=False)
    response = client.get("/portal/callback", params={"code": "x", "state": "forged"})
    assert response.status_code == 400
    assert "登录未完成" in response.text
    assert "退出登录" not in response.text


def _demo_consent(client: TestClient) -> Consent:
    with _runtime(client).vault.sessions() as session:
        consent = session.scalars(
            select(Consent)
            .outerjoin(ConsentRevocation, ConsentRevocation.consent_id == Consent.id)
            .where(ConsentRevocation.consent_id.is_(None), Consent.channel == "self")
        ).first()
        assert consent is not None
        return consent


def _revoked(client: TestClient, consent_id: str) -> bool:
    with _runtime(client).vault.sessions() as session:
        return session.get(ConsentRevocation, consent_id) is not None


def test_a_form_post_without_the_csrf_token_or_from_another_origin_does_nothing(
    client: TestClient, cast: dict[str, Any]
) -> None:
    consent = _demo_consent(client)
    owner = _user(cast, "resident", resident_id=consent.resident_id)
    sign_in(client, "portal", owner["username"], owner["password"])
    path = f"/portal/consents/{consent.id}/revoke"

    missing = client.post(path, data={}, follow_redirects=False)
    wrong = client.post(path, data={"csrf_token": "guess"}, follow_redirects=False)
    token = _csrf(client, "/portal/consents")
    elsewhere = client.post(
        path,
        data={"csrf_token": token},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    for refused in (missing, wrong, elsewhere):
        assert refused.status_code == 403
        assert "操作未执行" in refused.text
    assert not _revoked(client, consent.id)

    done = client.post(
        path, data={"csrf_token": token}, headers={"Origin": ORIGIN}, follow_redirects=False
    )
    assert done.status_code == 303
    assert _revoked(client, consent.id)
    assert "已撤回" in client.get("/portal/consents").text


def test_a_page_view_writes_the_same_audit_entry_as_the_api(
    client: TestClient, cast: dict[str, Any]
) -> None:
    resident = _user(cast, "resident", username="resident2")
    sign_in(client, "portal", resident["username"], resident["password"])
    before = _entries(client, resident_id=resident["resident_id"], action="read")
    page = client.get("/portal/")
    assert page.status_code == 200
    after = _entries(client, resident_id=resident["resident_id"], action="read")
    assert len(after) == len(before) + 1
    entry = after[-1]
    assert entry.request_id == page.headers["x-request-id"]
    assert (entry.subject_type, entry.user, entry.legal_basis, entry.outcome) == (
        "resident",
        resident["username"],
        "self",
        "allowed",
    )
    assert entry.fields.get("id_number") == "clear"
    # The timeline lists the entry, and a resident cannot open the auditors' console.
    assert "谁查看了我的信息" in client.get("/portal/accesses").text
    console = client.get("/console/")
    assert console.status_code == 403
    assert "不能使用此页面" in console.text


def test_desk_search_takes_the_number_only_in_a_post(
    client: TestClient, cast: dict[str, Any]
) -> None:
    worker = _user(cast, "community_worker")
    sign_in(client, "desk", worker["username"], worker["password"])
    assert client.get("/desk/search").status_code == 405
    token = _csrf(client, "/desk/")
    found = client.post(
        "/desk/search",
        data={
            "csrf_token": token,
            "by": "phone",
            "value": "13900000000",
            "purpose": "counter-service",
        },
    )
    assert found.status_code == 200
    assert "没有找到" in found.text
    searched = _entries(client, user=worker["username"], action="search")
    assert searched and searched[-1].reason == "no-match"
    assert "13900000000" not in str(searched[-1].details)


def _community_of(client: TestClient, resident_id: str) -> str:
    with _runtime(client).vault.sessions() as session:
        return str(
            session.scalar(
                select(Building.community_id)
                .join(Room, Room.building_id == Building.id)
                .join(Household, Household.room_id == Room.id)
                .join(Resident, Resident.household_id == Household.id)
                .where(Resident.id == resident_id)
            )
        )


def test_a_correction_request_goes_to_the_community_queue_sealed_and_audited(
    client: TestClient, cast: dict[str, Any]
) -> None:
    worker = _user(cast, "community_worker")
    community = worker["jurisdiction"]["community"]
    resident = next(
        u
        for u in cast["users"]
        if u["role"] == "resident" and _community_of(client, u["resident_id"]) == community
    )
    sign_in(client, "portal", resident["username"], resident["password"])
    token = _csrf(client, "/portal/correction")
    sent = client.post(
        "/portal/correction",
        data={"csrf_token": token, "field": "phone", "value": "13511112222", "note": "换号了"},
    )
    assert sent.status_code == 200
    assert "已提交更正申请" in sent.text
    with _runtime(client).vault.sessions() as session:
        row = session.scalars(
            select(CorrectionRequest).where(
                CorrectionRequest.resident_id == resident["resident_id"]
            )
        ).one()
        assert b"13511112222" not in row.sealed
    asked = _entries(client, action="correction.requested", resident_id=resident["resident_id"])
    assert [e.fields for e in asked] == [{"phone": "proposed"}]
    assert "13511112222" not in str(asked[0].details)

    client.cookies.clear()
    sign_in(client, "desk", worker["username"], worker["password"])
    queue = client.get("/desk/corrections")
    assert row.id in queue.text
    token = hidden_fields(queue.text)["csrf_token"]
    opened = client.post(f"/desk/corrections/{row.id}/open", data={"csrf_token": token})
    assert "13511112222" in opened.text and "换号了" in opened.text
    assert _entries(client, action="correction.opened", user=worker["username"])
    client.post(f"/desk/corrections/{row.id}/resolve", data={"csrf_token": token})
    assert _entries(client, action="correction.resolved", resident_id=resident["resident_id"])


def test_english_is_one_link_away_and_sticks(client: TestClient) -> None:
    english = client.get("/portal/", params={"lang": "en"})
    assert '<html lang="en"' in english.text
    assert "Please sign in" in english.text
    assert '<html lang="en"' in client.get("/desk/").text  # remembered in a cookie


def test_sign_out_ends_the_session_and_revokes_its_tokens(
    client: TestClient, cast: dict[str, Any]
) -> None:
    auditor = _user(cast, "auditor")
    sign_in(client, "console", auditor["username"], auditor["password"])
    assert client.get("/console/heads").status_code == 200
    store = client.app.state.page_sessions  # type: ignore[attr-defined]
    bearer = store.get(client.cookies.get("__Host-rv_pages")).access_token
    api = {"Authorization": f"Bearer {bearer}"}
    assert client.get("/v1/audit/entries", headers=api).status_code == 200
    token = _csrf(client, "/console/")
    out = client.post("/console/logout", data={"csrf_token": token})
    assert out.status_code == 200
    assert "请先登录" in out.text
    assert "请先登录" in client.get("/console/").text
    assert client.get("/v1/audit/entries", headers=api).status_code == 401


def test_the_timeline_names_the_worker_by_role_and_badge(
    client: TestClient, cast: dict[str, Any]
) -> None:
    worker = _user(cast, "community_worker")
    community = worker["jurisdiction"]["community"]
    resident = next(
        u
        for u in cast["users"]
        if u["role"] == "resident" and _community_of(client, u["resident_id"]) == community
    )
    with _runtime(client).vault.sessions() as session:
        id_number = _runtime(client).vault.store.read(
            session, resident["resident_id"], ["id_number"]
        )["id_number"]
    sign_in(client, "desk", worker["username"], worker["password"])
    found = client.post(
        "/desk/search",
        data={
            "csrf_token": _csrf(client, "/desk/"),
            "by": "id_number",
            "value": id_number,
            "purpose": "counter-service",
        },
    )
    assert resident["resident_id"] in found.text
    assert id_number not in str(found.url)

    client.cookies.clear()
    sign_in(client, "portal", resident["username"], resident["password"])
    deadline = time.monotonic() + 10
    while "社区窗口服务（含代办）" not in (timeline := client.get("/portal/accesses").text):
        assert time.monotonic() < deadline, "the worker's search never reached the timeline"
        time.sleep(0.2)  # entries join the timeline once integrated into the log
    assert "社区工作者，工号 SQ-XF-001" in timeline
    others = client.get("/portal/accesses", params={"others": "1"}).text
    assert "社区工作者，工号 SQ-XF-001" in others
    assert "<dd>您本人</dd>" not in others


def _client_token(client: TestClient, cast: dict[str, Any], organisation: str) -> str:
    app_client = next(c for c in cast["clients"] if c["organisation"] == organisation)
    response = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": " ".join(app_client["scopes"])},
        auth=(app_client["client_id"], app_client["client_secret"]),
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def test_a_resident_answers_a_request_and_gives_consent_on_the_page(
    client: TestClient, cast: dict[str, Any]
) -> None:
    resident = _user(cast, "resident", username="resident.guardian")
    with _runtime(client).vault.sessions() as session:
        served = session.scalars(
            select(Building.id)
            .join(Room, Room.building_id == Building.id)
            .join(Household, Household.room_id == Room.id)
            .where(
                Household.id
                == select(Resident.household_id)
                .where(Resident.id == resident["resident_id"])
                .scalar_subquery()
            )
        ).first()
        company = session.scalars(
            select(OrganisationBuilding.organisation_id).where(
                OrganisationBuilding.building_id == served
            )
        ).first()
    if company is None:
        pytest.skip("the guardian's building has no property company in this demo")
    token = _client_token(client, cast, company)
    # The company names the resident by its own pseudonym, as it does everywhere.
    gate = client.app.state.gate  # type: ignore[attr-defined]
    asked = client.post(
        "/v1/consent-requests",
        json={
            "resident_id": gate.pseudonyms.of(company, resident["resident_id"]),
            "purpose": "property-notice",
            "message": "物业通知需要您的手机号",
        },
        headers={"Authorization": f"Bearer {token}"},
    )
    assert asked.status_code == 201, asked.text
    request_id = asked.json()["request_id"]

    sign_in(client, "portal", resident["username"], resident["password"])
    page = client.get("/portal/consents")
    assert "物业通知需要您的手机号" in page.text
    answered = client.post(
        f"/portal/consent-requests/{request_id}/answer",
        data={"csrf_token": hidden_fields(page.text)["csrf_token"], "accept": "yes"},
    )
    assert "已答复" in answered.text
    with _runtime(client).vault.sessions() as session:
        given = session.scalars(
            select(Consent).where(
                Consent.resident_id == resident["resident_id"], Consent.recipient == company
            )
        ).all()
    assert given


def test_my_data_downloads_as_json_and_csv(client: TestClient, cast: dict[str, Any]) -> None:
    resident = _user(cast, "resident", username="resident1")
    sign_in(client, "portal", resident["username"], resident["password"])
    as_json = client.get("/portal/export.json")
    assert as_json.status_code == 200
    assert as_json.headers["content-disposition"] == 'attachment; filename="my-data.json"'
    assert as_json.json()["resident_id"] == resident["resident_id"]
    as_csv = client.get("/portal/export.csv")
    assert as_csv.text.splitlines()[0] == "field,value"
    portability = _entries(client, resident_id=resident["resident_id"], purpose="portability")
    assert len(portability) >= 2


def test_console_times_are_china_time_with_an_offset() -> None:
    from api.pages.console import _local_time
    from api.pages.core import iso_time

    assert _local_time("2026-12-02T09:30") == "2026-12-02T09:30:00+08:00"
    assert _local_time("not a time") is None
    assert iso_time("2026-12-02T01:30:00+00:00") == "2026-12-02T09:30:00+08:00"


def test_the_console_lists_insider_abuse_alerts_and_break_glass_to_review(
    client: TestClient, cast: dict[str, Any]
) -> None:
    from audit.detection import DetectionRules, Detector

    runtime = _runtime(client)
    worker = _user(cast, "grid_worker")
    sign_in(client, "desk", worker["username"], worker["password"])
    store = client.app.state.page_sessions  # type: ignore[attr-defined]
    bearer = store.get(client.cookies.get("__Host-rv_pages")).access_token
    api = {"Authorization": f"Bearer {bearer}", "Purpose": "grid-service"}
    listed = client.get("/v1/residents", headers=api, params={"limit": 30}).json()["items"]
    assert listed
    # Lowered to what the list showed (a list of the grid is normal work by default).
    rules = DetectionRules(volume_floor=len(listed), jurisdiction_passes=0, suspend_on=frozenset())
    watch = Detector(runtime.audit, rules, [])
    with runtime.transaction() as session:
        raised = [a for a in watch.scan(session) if a.actor == worker["username"]]
    assert [a.kind for a in raised] == ["volume"]
    auditor = _user(cast, "auditor")
    sign_in(client, "console", auditor["username"], auditor["password"])
    page = client.get("/console/anomalies")
    assert page.status_code == 200
    assert "内部滥用预警" in page.text and "访问量远超平常" in page.text
    assert worker["username"] in page.text
    assert "紧急访问待复核" in page.text
