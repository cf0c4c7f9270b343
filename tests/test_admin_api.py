"""The admin API (docs/admin.md) through the demo operator's own token, as the operator
console calls it: nobody but an operator holds `admin:write`, a refused change writes
nothing, and a mandate granted or revoked holds from the very next request."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
from structlog.testing import capture_logs

from tests.browser.server import hidden_fields
from tests.route_walk import World, world_fixture

world = world_fixture()

DEPARTMENT = "org_civil_affairs"
PURPOSE = "subsidy-review"


def _admin(world: World, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return world.call(method, f"/v1/admin{path}", world.bearers["operator"], **kwargs)


def _department_read(world: World) -> httpx.Response:
    return world.call(
        "GET", "/v1/residents", world.bearers[DEPARTMENT], purpose=PURPOSE, params={"limit": 5}
    )


def _slug(response: httpx.Response) -> str:
    return str(response.json()["type"]).rsplit("/", 1)[-1]


def test_the_operator_signs_in_to_the_console_and_holds_admin_write(world: World) -> None:
    listed = _admin(world, "GET", "/places")
    assert listed.status_code == 200, listed.text
    kinds = {p["kind"] for p in listed.json()["items"]}
    assert kinds == {"street", "community", "grid", "building"}
    world.sign_in("operator")
    page = world.client.get("/operator/accounts")
    assert page.status_code == 200 and "ops.demo" in page.text


def test_an_auditor_and_a_department_get_insufficient_scope(world: World) -> None:
    for holder in ("auditor", DEPARTMENT, "community_worker", "resident"):
        for method, path in (("GET", "/places"), ("POST", "/mandates/revoke")):
            body = {"org": DEPARTMENT, "purpose": PURPOSE} if method == "POST" else None
            answer = world.call(method, f"/v1/admin{path}", world.bearers[holder], json=body)
            assert answer.status_code == 403, (holder, path, answer.text)
            assert _slug(answer) == "insufficient-scope", (holder, answer.text)
    # Nor can an organisation's system ask for the scope.
    client = next(c for c in world.cast["clients"] if c["organisation"] == DEPARTMENT)
    asked = world.client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "admin:write"},
        auth=(client["client_id"], client["client_secret"]),
    )
    assert asked.status_code == 400 and asked.json()["error"] == "invalid_scope", asked.text
    # An auditor's sign-in to the operator console is refused too.
    world.sign_in("auditor")
    assert world.client.get("/operator/").status_code == 403


def test_a_refused_change_writes_nothing(world: World) -> None:
    refusals = [
        ("POST", "/places", {"kind": "community", "id": "cm_x", "name": "x", "parent": "st_no"}),
        ("POST", "/places/cm_xingfu/retire", {"kind": "community"}),  # people live there
        ("POST", "/organisations", {"id": DEPARTMENT, "kind": "department", "name": "x"}),
        ("POST", "/mandates", {"org": DEPARTMENT, "purpose": PURPOSE, "actions": ["fly"]}),
        ("POST", "/mandates/revoke", {"org": "org_health", "purpose": "no-such-purpose"}),
        ("POST", "/accounts", {"username": "auditor", "org": DEPARTMENT, "role": "auditor"}),
        ("POST", "/accounts/nobody.here/disable", None),
    ]
    before = world.entries_count()
    places = _admin(world, "GET", "/places").json()
    mandates = _admin(world, "GET", "/mandates", params={"history": "true"}).json()
    for method, path, body in refusals:
        answer = _admin(world, method, path, json=body)
        assert answer.status_code in (404, 409, 422), (path, answer.status_code, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
    assert world.entries_count() == before
    assert _admin(world, "GET", "/places").json() == places
    assert _admin(world, "GET", "/mandates", params={"history": "true"}).json() == mandates


def test_a_grant_and_a_revoke_hold_from_the_next_request(world: World) -> None:
    allowed = _department_read(world)
    assert allowed.status_code == 200, allowed.text
    in_force = _admin(world, "GET", "/mandates", params={"org": DEPARTMENT}).json()["items"]
    mandate = next(m for m in in_force if m["purpose"] == PURPOSE)

    which = {"org": DEPARTMENT, "purpose": PURPOSE}
    revoked = _admin(world, "POST", "/mandates/revoke", json=which)
    assert revoked.status_code == 200, revoked.text
    denied = _department_read(world)
    assert denied.status_code == 403, denied.text
    assert denied.headers["Policy-Revision"] != allowed.headers["Policy-Revision"]

    granted = _admin(
        world,
        "POST",
        "/mandates",
        json={
            "org": DEPARTMENT,
            "purpose": PURPOSE,
            "actions": mandate["actions"],
            "fields": mandate["fields"],
            "basis": mandate["basis"],
        },
    )
    assert granted.status_code == 201, granted.text
    again = _department_read(world)
    assert again.status_code == 200, again.text
    assert [i["resident_id"] for i in again.json()["items"]] == [
        i["resident_id"] for i in allowed.json()["items"]
    ]
    actions = [e.action for e in world.entries_of(granted.headers["x-request-id"])]
    assert actions == ["mandate.granted"]


def test_the_consoles_one_time_password_is_on_its_page_alone(world: World) -> None:
    """Added at the console: the password is in the answer's HTML (no-store), and in no
    header, cookie, redirect, audit entry or log line."""
    world.sign_in("operator")
    form = hidden_fields(world.client.get("/operator/accounts").text)
    typed = {"username": "desk.temp", "org": DEPARTMENT, "role": "auditor"}
    with capture_logs() as logged:
        answer = world.client.post(
            "/operator/accounts",
            data={"csrf_token": form["csrf_token"], **typed},
            follow_redirects=False,
        )
    assert answer.status_code == 200, answer.text[:300]
    assert answer.headers["cache-control"] == "no-store"
    shown = re.search(r'id="one-time-password"[^>]*>([^<]+)<', answer.text)
    assert shown is not None
    password = shown.group(1)
    assert password not in json.dumps(logged, default=str)  # every event, before rendering
    assert all(password not in value for value in answer.headers.values())
    assert all(password not in (value or "") for value in world.client.cookies.values())
    entries = world.entries_of(answer.headers["x-request-id"])
    assert [e.action for e in entries] == ["account.added"]
    assert all(password not in json.dumps(e.details, default=str) for e in entries)
    assert password not in world.client.get("/operator/accounts").text


def test_a_reset_from_the_admin_api_ends_the_accounts_logins(world: World) -> None:
    """As `accounts reset-password` does: whoever held the old password is logged out."""
    person = world.sign_in("grid_worker")
    token = world.page_bearer()
    world.client.cookies.clear()
    before = world.call("GET", "/v1/residents", token, purpose="grid-service")
    assert before.status_code == 200, before.text
    reset = _admin(world, "POST", f"/accounts/{person['username']}/reset-password")
    assert reset.status_code == 200, reset.text
    assert reset.headers["cache-control"] == "no-store"
    after = world.call("GET", "/v1/residents", token, purpose="grid-service")
    assert after.status_code == 401, after.text
    # The walk's grid worker signs in again with the new password, for the tests after.
    person["password"] = reset.json()["one_time_password"]
    world.sign_in("grid_worker")
    world.bearers["grid_worker"] = world.page_bearer()
    world.client.cookies.clear()
