"""Break-glass: beyond normal policy for one resident, flagged, time-limited, notified to
the resident and queued for an auditor's review."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import quote

from sqlalchemy import select, update

from audit.models import AuditEntry
from consent.models import BreakGlassGrant
from tests.demo_server import DemoServer, call, demo_server_fixture, residents_in
from vault.models import utcnow

RESCUE = "emergency-rescue"


server = demo_server_fixture("break-glass-demo")


def person(server: DemoServer, role: str, scope: str, **match: Any) -> tuple[dict[str, Any], str]:
    user = server.user(role, **match)
    return user, str(server.login(user["username"], user["password"], scope)["access_token"])


def outsider_for(server: DemoServer, worker: dict[str, Any]) -> str:
    """A resident outside the worker's community."""
    community = worker["jurisdiction"]["community"]
    other = "cm_hexie" if community == "cm_xingfu" else "cm_xingfu"
    return residents_in(server, other)[0]


def test_break_glass_opens_one_record_flags_notifies_and_queues(server: DemoServer) -> None:
    worker, token = person(server, "grid_worker", "residents:read")
    resident = outsider_for(server, worker)
    path = f"/v1/residents/{resident}"
    # Normally out of reach, and the emergency purpose alone opens nothing.
    assert call(server, "GET", path, token, "grid-service").status_code == 404
    refused = call(server, "GET", path, token, RESCUE)
    assert refused.status_code == 403
    assert refused.json()["type"].endswith("/problems/break-glass-required")
    too_short = call(
        server,
        "POST",
        "/v1/break-glass",
        token,
        json={"resident_id": resident, "justification": "急"},
    )
    assert too_short.status_code == 422
    why = "邻居报告老人跌倒无法应答，需联系紧急联系人并告知急救人员病史"
    # The reason as API.md's Justification header (percent-encoded UTF-8), or in the body.
    opened = call(
        server,
        "POST",
        "/v1/break-glass",
        token,
        json={"resident_id": resident},
        headers={"Justification": quote(why)},
    )
    assert opened.status_code == 201, opened.text
    grant = opened.json()
    assert grant["review_status"] == "pending" and grant["expires_at"] > grant["created_at"]
    read = call(server, "GET", path, token, RESCUE)
    assert read.status_code == 200, read.text
    record = read.json()
    assert record["treatments"]["health_conditions"] == "clear"
    assert record["treatments"]["religion"] == "denied"
    # Flagged in the log, with the grant it rests on.
    with server.runtime.vault.sessions() as session:
        entry = session.scalars(
            select(AuditEntry).where(AuditEntry.decision_id == read.headers["Decision-Id"])
        ).one()
    assert entry.details["break_glass"] == grant["grant_id"] and entry.purpose == RESCUE
    assert entry.legal_basis == "vital-interests"
    # One resident only: another one stays closed, and lists never open.
    neighbour = residents_in(
        server, "cm_hexie" if resident in residents_in(server, "cm_hexie") else "cm_xingfu"
    )[1]
    other = call(server, "GET", f"/v1/residents/{neighbour}", token, RESCUE)
    assert other.status_code == 403
    listing = call(server, "GET", "/v1/residents", token, RESCUE)
    assert listing.status_code == 403 and listing.json()["type"].endswith("/problems/policy-denied")
    # The resident is told, and sees the access among those made to their record.
    me = server.resident_token(resident)
    told = call(server, "GET", "/v1/me/notifications", me).json()["items"]
    assert [n["reference"] for n in told if n["kind"] == "break-glass"] == [grant["grant_id"]]
    assert worker["username"] in told[0]["text"]
    accesses = call(server, "GET", "/v1/me/accesses", me).json()["items"]
    assert any(a.get("purpose") == RESCUE for a in accesses)
    # The auditor's queue holds it, with the accesses made under it, until reviewed.
    _, auditor = person(server, "auditor", "audit:read")
    queue = call(server, "GET", "/v1/audit/break-glass", auditor).json()["items"]
    queued = next(g for g in queue if g["grant_id"] == grant["grant_id"])
    assert queued["accesses"] == 1 and queued["worker"] == worker["username"]
    reviewed = call(
        server,
        "POST",
        f"/v1/audit/break-glass/{grant['grant_id']}/review",
        auditor,
        json={"outcome": "justified", "note": "急救中心记录相符"},
    )
    assert reviewed.status_code == 200 and reviewed.json()["review_status"] == "justified"
    again = call(
        server,
        "POST",
        f"/v1/audit/break-glass/{grant['grant_id']}/review",
        auditor,
        json={"outcome": "unjustified"},
    )
    assert again.status_code == 409
    pending = call(server, "GET", "/v1/audit/break-glass", auditor).json()["items"]
    assert grant["grant_id"] not in {g["grant_id"] for g in pending}


def test_a_grant_expires(server: DemoServer) -> None:
    worker, token = person(server, "grid_worker", "residents:read")
    resident = residents_in(server, "cm_hexie")[-1]
    if worker["jurisdiction"]["community"] == "cm_hexie":
        resident = residents_in(server, "cm_xingfu")[-1]
    opened = call(
        server,
        "POST",
        "/v1/break-glass",
        token,
        json={
            "resident_id": resident,
            "justification": "火灾疏散，需确认独居老人是否在家",
            "minutes": 5,
        },
    )
    assert opened.status_code == 201, opened.text
    assert call(server, "GET", f"/v1/residents/{resident}", token, RESCUE).status_code == 200
    with server.runtime.transaction() as session:  # five minutes later
        session.execute(
            update(BreakGlassGrant)
            .where(BreakGlassGrant.id == opened.json()["grant_id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    expired = call(server, "GET", f"/v1/residents/{resident}", token, RESCUE)
    assert expired.status_code == 403
    assert expired.json()["type"].endswith("/problems/break-glass-required")


def test_only_workers_break_glass(server: DemoServer) -> None:
    department = server.client_token("org_civil_affairs")
    resident = residents_in(server, "cm_xingfu")[0]
    refused = call(
        server,
        "POST",
        "/v1/break-glass",
        department,
        json={
            "resident_id": resident,
            "justification": "想看看这个人的病史记录",
        },
    )
    assert refused.status_code == 403
    assert (
        call(
            server,
            "GET",
            f"/v1/residents/{server.pseudonym('org_civil_affairs', resident)}",
            department,
            RESCUE,
        ).status_code
        == 403
    )
