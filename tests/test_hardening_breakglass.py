"""Hardening of break-glass and of consent jurisdiction, through real HTTP.

- Opening a grant is no existence oracle: any id a worker names gets the same answer,
  and every attempt is on the record (only a resident the worker may reach gets a grant).
- A worker acts on consents only within the rows the gate lets them read: a grid
  worker's grid, not their whole community.
- Listing grants (the auditors' queue, a resident's notifications) is a read, recorded
  before the answer for each resident it names.
"""

from __future__ import annotations

import base64
import re
import secrets
from typing import Any

import httpx
from sqlalchemy import select, update

from audit.models import AuditEntry
from consent.models import BreakGlassGrant, Consent, ConsentRevocation, ResidentNotification
from tests.demo_server import DemoServer, call, demo_server_fixture, residents_in
from tests.test_break_glass import RESCUE, person
from tests.test_consent import COMPANY, PURPOSE, assert_problem, grant
from vault.models import Building, Household, Resident, Room

server = demo_server_fixture("hardening-breakglass-demo")

WHY = "独居老人家中漏水无人应答，需联系其紧急联系人"
GRANT_ID = re.compile(r"^bg_[0-9a-f]{16}$")

_taken: dict[int, set[str]] = {}


def unused(server: DemoServer, *, grid: str | None = None, community: str | None = None) -> str:
    """A real, active resident of a grid or community that no test here has used yet."""
    taken = _taken.setdefault(id(server), set())
    if community is not None:
        candidates = residents_in(server, community)
    else:
        with server.runtime.vault.sessions() as session:
            candidates = list(
                session.scalars(
                    select(Resident.id)
                    .join(Household, Household.id == Resident.household_id)
                    .join(Room, Room.id == Household.room_id)
                    .join(Building, Building.id == Room.building_id)
                    .where(
                        Building.grid_id == grid,
                        Resident.status == "active",
                        Resident.is_decoy.is_(False),
                    )
                    .order_by(Resident.id)
                )
            )
    with server.runtime.vault.sessions() as session:
        # The demo's own consent (create_demo_consents) is on one of these residents.
        consenting = set(session.scalars(select(Consent.resident_id)))
    for resident_id in candidates:
        if resident_id not in taken and resident_id not in consenting:
            taken.add(resident_id)
            return resident_id
    raise LookupError("no unused resident left")


def entries(server: DemoServer, response: httpx.Response, action: str) -> list[AuditEntry]:
    """The entries the request behind `response` recorded under `action`."""
    with server.runtime.vault.sessions() as session:
        return list(
            session.scalars(
                select(AuditEntry).where(
                    AuditEntry.request_id == response.headers["x-request-id"],
                    AuditEntry.action == action,
                )
            )
        )


def shape(body: dict[str, Any]) -> dict[str, str]:
    return {key: type(value).__name__ for key, value in body.items()}


def open_grant(server: DemoServer, token: str, resident_id: str) -> httpx.Response:
    return call(
        server,
        "POST",
        "/v1/break-glass",
        token,
        json={"resident_id": resident_id, "justification": WHY},
    )


# -- A: no existence oracle --------------------------------------------------------------------


def test_break_glass_answers_the_same_whoever_the_id_names(server: DemoServer) -> None:
    worker, token = person(server, "grid_worker", "residents:read", username="grid.xf1")
    mine = unused(server, grid=worker["jurisdiction"]["grids"][0])
    outside = unused(server, community="cm_hexie")
    decoy = unused(server, community="cm_xingfu")
    with server.runtime.transaction() as session:  # a fictional person of a traced export
        session.execute(update(Resident).where(Resident.id == decoy).values(is_decoy=True))
    named = unused(server, community="cm_xingfu")
    real = {"in-jurisdiction": mine, "out-of-jurisdiction": outside}
    nobody = {
        "nonexistent": f"r_{secrets.token_hex(8)}",
        "decoy": decoy,
        # A worker names residents by vault id: their organisation's pseudonym opens nothing.
        "pseudonym": server.pseudonym(worker["organisation"], named),
        "too-long": "r_" + "0" * 62,
    }
    answers = {case: open_grant(server, token, rid) for case, rid in {**real, **nobody}.items()}
    reference = answers["in-jurisdiction"]
    assert reference.status_code == 201, reference.text
    explanation = call(server, "GET", f"/v1/decisions/{reference.headers['Decision-Id']}", token)
    for case, answer in answers.items():
        given = {**real, **nobody}[case]
        assert answer.status_code == 201, (case, answer.text)
        body = answer.json()
        assert shape(body) == shape(reference.json()), case
        assert GRANT_ID.match(body["grant_id"]) and body["resident_id"] == given, case
        assert body["review_status"] == "pending" and body["worker"] == worker["username"]
        # Explaining the decision afterwards tells the cases apart no better.
        explained = call(server, "GET", f"/v1/decisions/{answer.headers['Decision-Id']}", token)
        assert explained.status_code == explanation.status_code, case
    # Every attempt is on the record, once; only a reachable resident has a grant and a notice.
    for case, rid in real.items():
        (entry,) = entries(server, answers[case], "break_glass.opened")
        assert entry.outcome == "allowed" and entry.resident_id == rid, case
        with server.runtime.vault.sessions() as session:
            assert session.get(BreakGlassGrant, answers[case].json()["grant_id"]) is not None
        assert call(server, "GET", f"/v1/residents/{rid}", token, RESCUE).status_code == 200
    for case, given in nobody.items():
        (entry,) = entries(server, answers[case], "break_glass.opened")
        assert entry.outcome == "denied" and entry.user == worker["username"], case
        assert entry.details["given"] == given[:64], case
        assert entry.details["grant"] == answers[case].json()["grant_id"], case
        with server.runtime.vault.sessions() as session:
            assert session.get(BreakGlassGrant, entry.details["grant"]) is None, case
            told = session.scalars(
                select(ResidentNotification).where(
                    ResidentNotification.reference == entry.details["grant"]
                )
            ).all()
        assert not told, case
        # The grant opens nothing: a read of that id still goes through the gate.
        read = call(server, "GET", f"/v1/residents/{given}", token, RESCUE)
        assert read.status_code in (403, 404), (case, read.text)
    # The resident behind the pseudonym sees the attempt; a decoy's is kept apart.
    (pseudonymous,) = entries(server, answers["pseudonym"], "break_glass.opened")
    assert pseudonymous.resident_id == named
    assert pseudonymous.resident_pseudonym == nobody["pseudonym"]
    (probe,) = entries(server, answers["decoy"], "break_glass.opened")
    assert probe.kind == "decoy" and probe.resident_id == decoy
    (unknown,) = entries(server, answers["nonexistent"], "break_glass.opened")
    assert unknown.resident_id is None and unknown.details["unresolved"] is True


def test_validation_comes_before_the_resident_and_does_not_tell_them_apart(
    server: DemoServer,
) -> None:
    _, token = person(server, "grid_worker", "residents:read", username="grid.xf1")
    for rid in (unused(server, community="cm_xingfu"), f"r_{secrets.token_hex(8)}"):
        short = call(
            server,
            "POST",
            "/v1/break-glass",
            token,
            json={"resident_id": rid, "justification": "急"},
        )
        body = assert_problem(short, 422, "validation-error")
        assert [e["field"] for e in body["errors"]] == ["justification"]


# -- B: consent jurisdiction is the gate's ------------------------------------------------------


def evidence(resident_id: str) -> dict[str, Any]:
    form = b"%PDF-1.4 signed consent form " + secrets.token_bytes(32)
    return {
        "resident_id": resident_id,
        "recipient": COMPANY,
        "purpose": PURPOSE,
        "separate": True,
        "evidence": {
            "content_base64": base64.b64encode(form).decode(),
            "media_type": "application/pdf",
        },
        "witness": "王芳 (SQ-XF-002)",
    }


def test_a_grid_worker_acts_on_consents_only_within_their_grid(server: DemoServer) -> None:
    worker, token = person(
        server, "grid_worker", "consents:read consents:write", username="grid.xf1"
    )
    grid = worker["jurisdiction"]["grids"][0]
    other_grid = next(g for g in ("gd_xf_1", "gd_xf_2") if g != grid)
    mine, theirs = unused(server, grid=grid), unused(server, grid=other_grid)
    # Recording assisted consent: the grid worker's own grid only.
    assert_problem(
        call(server, "POST", "/v1/consents", token, json=evidence(theirs)), 404, "not-found"
    )
    recorded = call(server, "POST", "/v1/consents", token, json=evidence(mine))
    assert recorded.status_code == 201, recorded.text
    # Reading a resident's consents and a consent's receipt: likewise.
    assert_problem(
        call(server, "GET", "/v1/consents", token, params={"resident_id": theirs}), 404, "not-found"
    )
    listed = call(server, "GET", "/v1/consents", token, params={"resident_id": mine})
    assert [c["consent_id"] for c in listed.json()["items"]] == [recorded.json()["consent_id"]]
    given = grant(server, server.resident_token(theirs))
    assert given.status_code == 201, given.text
    theirs_consent = given.json()["consent_id"]
    assert_problem(
        call(server, "GET", f"/v1/consents/{theirs_consent}/receipt", token), 404, "not-found"
    )
    # Revoking at the counter: not the other grid's consent, which stays active.
    refused = call(
        server,
        "POST",
        f"/v1/consents/{theirs_consent}/revoke",
        token,
        json={"witness": "李明 (WG-XF-001)"},
    )
    assert_problem(refused, 404, "not-found")
    with server.runtime.vault.sessions() as session:
        assert session.get(ConsentRevocation, theirs_consent) is None
    revoked = call(
        server,
        "POST",
        f"/v1/consents/{recorded.json()['consent_id']}/revoke",
        token,
        json={"witness": "李明 (WG-XF-001)"},
    )
    assert revoked.status_code == 200, revoked.text
    # The community worker's jurisdiction is the whole community: both grids.
    counter = server.user("community_worker")
    community = str(
        server.login(counter["username"], counter["password"], "consents:read consents:write")[
            "access_token"
        ]
    )
    assert (
        call(server, "GET", "/v1/consents", community, params={"resident_id": theirs}).status_code
        == 200
    )


# -- C: listing grants is a read ---------------------------------------------------------------


def test_listing_break_glass_grants_is_on_the_record(server: DemoServer) -> None:
    _, token = person(server, "grid_worker", "residents:read", username="grid.xf1")
    resident = unused(server, community="cm_hexie")
    assert open_grant(server, token, resident).status_code == 201
    auditor, audit = person(server, "auditor", "audit:read")
    queue = call(server, "GET", "/v1/audit/break-glass", audit, params={"status": "all"})
    assert queue.status_code == 200
    shown = {g["resident_id"] for g in queue.json()["items"]}
    assert resident in shown
    recorded = entries(server, queue, "break_glass.queue")
    assert {e.resident_id for e in recorded} == shown
    assert all(e.user == auditor["username"] and e.kind == "access" for e in recorded)
    # The resident reading what they were told is on their record too.
    me = server.resident_token(resident)
    told = call(server, "GET", "/v1/me/notifications", me)
    assert [n["kind"] for n in told.json()["items"]] == ["break-glass"]
    (entry,) = [e for e in entries(server, told, "notifications.list") if e.resident_id == resident]
    assert entry.details["count"] == 1 and entry.kind == "access"
