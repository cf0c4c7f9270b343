"""Correction requests go through the gate: a worker handles only the requests a read of
that field, for their correction purpose, would let them see (their grid, not just their
community; no field their decision withholds), sees the proposed value as that read shows
it, cannot tell "not yours" from "not there", and every listing, opening and refusal is in
the audit log before anything is answered."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from access import corrections
from access.corrections import Actor, CorrectionError
from access.gate import Gate
from access.models import CorrectionRequest
from api.http.app import create_app
from api.oauth.service import create_user
from audit import AuditUnavailable
from audit.models import Suspension
from tests.browser.server import hidden_fields, prepare, sign_in
from tests.test_pages import ORIGIN, _entries, _runtime, _user
from vault.masking import mask_value
from vault.models import Building, Household, Resident, Room, utcnow

NOWHERE = "cr_0000000000000000"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, Any]]]:
    home = tmp_path_factory.mktemp("corrections")
    settings, credentials = prepare(home / "home", f"sqlite:///{home / 'vault.db'}", ORIGIN)
    with TestClient(create_app(settings), base_url=ORIGIN) as client:
        yield client, credentials


@pytest.fixture
def client(served: tuple[TestClient, dict[str, Any]]) -> TestClient:
    served[0].cookies.clear()
    return served[0]


@pytest.fixture
def cast(served: tuple[TestClient, dict[str, Any]]) -> dict[str, Any]:
    return served[1]


def _gate(client: TestClient) -> Gate:
    gate: Gate = client.app.state.gate  # type: ignore[attr-defined]
    return gate


def _resident_of_grid(client: TestClient, grid: str) -> str:
    with _runtime(client).vault.sessions() as session:
        found = session.scalars(
            select(Resident.id)
            .join(Household, Household.id == Resident.household_id)
            .join(Room, Room.id == Household.room_id)
            .join(Building, Building.id == Room.building_id)
            .where(
                Building.grid_id == grid, Resident.status == "active", Resident.is_decoy.is_(False)
            )
            .order_by(Resident.id)
        ).first()
    assert found is not None
    return str(found)


def _bearer(client: TestClient) -> str:
    store = client.app.state.page_sessions  # type: ignore[attr-defined]
    token: str = store.get(client.cookies.get("__Host-rv_pages")).access_token
    return token


def _signed_in(client: TestClient, area: str, username: str, password: str) -> Actor:
    """Sign in on the pages, then the Actor the pages build from that session's token."""
    client.cookies.clear()
    sign_in(client, area, username, password)
    principal = client.app.state.token_verifier.verify(_bearer(client))  # type: ignore[attr-defined]
    return corrections.actor_for(_runtime(client), principal, f"req_{secrets.token_hex(6)}")


def _worker(client: TestClient, cast: dict[str, Any], role: str, **match: Any) -> Actor:
    user = _user(cast, role, **match)
    return _signed_in(client, "desk", user["username"], user["password"])


def _file(client: TestClient, resident_id: str, field: str, value: str, note: str) -> str:
    """The resident asks on the portal, under an account of their own; the request's id."""
    runtime = _runtime(client)
    username, password = f"r-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    with runtime.transaction() as session:
        create_user(
            session,
            runtime.audit,
            username=username,
            password=password,
            role="resident",
            resident_id=resident_id,
            actor="test",
        )
    client.cookies.clear()
    sign_in(client, "portal", username, password)
    page = client.get("/portal/correction")
    sent = client.post(
        "/portal/correction",
        data={
            "csrf_token": hidden_fields(page.text)["csrf_token"],
            "field": field,
            "value": value,
            "note": note,
        },
    )
    assert sent.status_code == 200, sent.text[:300]
    with runtime.vault.sessions() as session:
        found = session.scalars(
            select(CorrectionRequest.id)
            .where(CorrectionRequest.resident_id == resident_id, CorrectionRequest.field == field)
            .order_by(CorrectionRequest.requested_at.desc())
        ).first()
    assert found is not None
    return str(found)


def _status(client: TestClient, request_id: str) -> str:
    with _runtime(client).vault.sessions() as session:
        row = session.get(CorrectionRequest, request_id)
        assert row is not None
        return str(row.status)


def _refused(call: Any) -> CorrectionError:
    with pytest.raises(CorrectionError) as raised:
        call()
    return raised.value


def _read(client: TestClient, resident_id: str, purpose: str) -> Any:
    """What the API's read gives the signed-in worker for this resident and purpose."""
    return client.get(
        f"/v1/residents/{resident_id}",
        params={"purpose": purpose},
        headers={"Authorization": f"Bearer {_bearer(client)}"},
    )


def test_a_grid_worker_cannot_list_open_or_resolve_another_grids_correction(
    client: TestClient, cast: dict[str, Any]
) -> None:
    gate = _gate(client)
    elsewhere = _resident_of_grid(client, "gd_xf_2")  # same community as the worker's grid
    asked = _file(client, elsewhere, "phone", "13522223333", "新号码")

    worker = _worker(client, cast, "grid_worker", username="grid.xf1")
    assert worker.subject.communities == ("cm_xingfu",)
    # The API denies the worker this resident; the correction queue agrees.
    assert _read(client, elsewhere, corrections.PURPOSES["grid_worker"]).status_code == 404
    assert asked not in {item["id"] for item in corrections.queue(gate, worker)}
    not_yours = _refused(lambda: corrections.open_request(gate, worker, asked))
    not_there = _refused(lambda: corrections.open_request(gate, worker, NOWHERE))
    assert (not_yours.key, not_yours.refusal) == (not_there.key, not_there.refusal)
    assert _refused(lambda: corrections.resolve(gate, worker, asked)).key == not_there.key
    assert _status(client, asked) == "pending"

    denied = _entries(client, user="grid.xf1", request_id=worker.request_id, outcome="denied")
    assert {(e.action, e.resident_id, e.reason) for e in denied} == {
        ("correction.opened", elsewhere, "not-found"),
        ("correction.opened", None, "not-found"),
        ("correction.resolved", elsewhere, "not-found"),
    }
    assert all(e.fields == {} and e.purpose == "grid-service" for e in denied)

    # The community's worker, whose rows cover that grid, has it in their queue.
    community = _worker(client, cast, "community_worker")
    assert asked in {item["id"] for item in corrections.queue(gate, community)}


def test_a_field_the_workers_read_withholds_is_neither_listed_nor_opened(
    client: TestClient, cast: dict[str, Any]
) -> None:
    gate = _gate(client)
    resident = _resident_of_grid(client, "gd_xf_1")
    asked = _file(client, resident, "religion", "无", "")
    for role, match in (("grid_worker", {"username": "grid.xf1"}), ("community_worker", {})):
        worker = _worker(client, cast, role, **match)
        read = _read(client, resident, corrections.PURPOSES[role])
        assert read.status_code == 200, read.text
        assert read.json()["treatments"]["religion"] == "denied"
        assert asked not in {item["id"] for item in corrections.queue(gate, worker)}
        assert _refused(lambda w=worker: corrections.open_request(gate, w, asked)).key == (
            "not-found"
        )
        [denied] = _entries(client, request_id=worker.request_id, outcome="denied")
        assert (denied.action, denied.resident_id, denied.reason) == (
            "correction.opened",
            resident,
            "policy-denied",
        )
        listed = _entries(client, request_id=worker.request_id, action="correction.listed")
        assert not [e for e in listed if asked in e.details["corrections"]]


def test_a_worker_allowed_the_field_sees_it_as_their_read_shows_it_and_it_is_recorded(
    client: TestClient, cast: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, runtime = _gate(client), _runtime(client)
    resident = _resident_of_grid(client, "gd_xf_1")
    proposed = "110101199001011234"
    masked = _file(client, resident, "id_number", proposed, f"旧号码有误，应为{proposed}")
    clear = _file(client, resident, "phone", "13544445555", "换号了")

    worker = _worker(client, cast, "grid_worker", username="grid.xf1")
    treatments = _read(client, resident, "grid-service").json()["treatments"]
    listed = corrections.queue(gate, worker)
    assert {masked, clear} <= {item["id"] for item in listed}
    [entry] = _entries(
        client, request_id=worker.request_id, action="correction.listed", resident_id=resident
    )
    assert entry.fields["id_number"] == entry.fields["phone"] == "listed"
    assert {masked, clear} <= set(entry.details["corrections"])
    assert (entry.purpose, entry.legal_basis) == ("grid-service", "statutory-duty")

    opened = corrections.open_request(gate, worker, masked)
    assert opened["treatment"] == treatments["id_number"] != "clear"
    assert opened["value"] == mask_value(runtime.vault.store.catalogue["id_number"], proposed)
    assert proposed not in str(opened)  # not in the value, and the note that repeats it is held
    shown = corrections.open_request(gate, worker, clear)
    assert shown["treatment"] == treatments["phone"] == "clear"
    assert (shown["value"], shown["note"]) == ("13544445555", "换号了")
    recorded = _entries(client, request_id=worker.request_id, action="correction.opened")
    assert [(e.fields, e.details["correction"], e.outcome) for e in recorded] == [
        ({"id_number": treatments["id_number"]}, masked, "allowed"),
        ({"phone": "clear"}, clear, "allowed"),
    ]

    # Nothing is answered without its entry: with the log refusing writes, no value leaves.
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AuditUnavailable("disk full")

    monkeypatch.setattr(runtime.audit, "record", refuse)
    with pytest.raises(AuditUnavailable):
        corrections.open_request(gate, worker, clear)
    with pytest.raises(AuditUnavailable):
        corrections.queue(gate, worker)
    monkeypatch.undo()

    corrections.resolve(gate, worker, clear)
    assert _status(client, clear) == "resolved"
    assert _entries(client, action="correction.resolved", resident_id=resident, user="grid.xf1")


def test_the_desk_pages_answer_not_yours_as_not_there_and_show_the_read_treatment(
    client: TestClient, cast: dict[str, Any]
) -> None:
    elsewhere = _file(client, _resident_of_grid(client, "gd_xf_2"), "phone", "13566667777", "")
    resident = _resident_of_grid(client, "gd_xf_1")
    mine = _file(client, resident, "id_number", "110101198002023456", "")

    worker = _user(cast, "grid_worker", username="grid.xf1")
    client.cookies.clear()
    sign_in(client, "desk", worker["username"], worker["password"])
    queue = client.get("/desk/corrections")
    assert mine in queue.text and elsewhere not in queue.text
    token = hidden_fields(queue.text)["csrf_token"]
    not_yours = client.post(f"/desk/corrections/{elsewhere}/open", data={"csrf_token": token})
    not_there = client.post(f"/desk/corrections/{NOWHERE}/open", data={"csrf_token": token})
    assert not_yours.status_code == not_there.status_code == 404
    assert "13566667777" not in not_yours.text
    assert not_yours.text.replace(elsewhere, NOWHERE) == not_there.text
    denied = _entries(client, request_id=not_yours.headers["x-request-id"], outcome="denied")
    assert [(e.action, e.user) for e in denied] == [("correction.opened", worker["username"])]

    opened = client.post(f"/desk/corrections/{mine}/open", data={"csrf_token": token})
    assert opened.status_code == 200
    spec = _runtime(client).vault.store.catalogue["id_number"]
    assert "110101198002023456" not in opened.text
    assert mask_value(spec, "110101198002023456") in opened.text
    assert "已遮盖" in opened.text  # and the page says the value is masked

    # The portal listed the resident's own request back to them: a read of their own, recorded.
    [own] = [
        e
        for e in _entries(client, action="correction.listed", resident_id=resident)
        if e.subject_type == "resident" and mine in e.details["corrections"]
    ]
    assert (own.legal_basis, own.fields["id_number"]) == ("self", "listed")


def test_a_suspended_worker_gets_no_queue_and_the_refusal_is_recorded(
    client: TestClient, cast: dict[str, Any]
) -> None:
    gate, runtime = _gate(client), _runtime(client)
    worker = _worker(client, cast, "grid_worker", username="grid.hx1")
    assert corrections.queue(gate, worker) == []  # nothing filed in that grid
    with runtime.transaction() as session:
        session.add(
            Suspension(
                id=f"su_{secrets.token_hex(6)}",
                actor="grid.hx1",
                actor_kind="user",
                reason="test",
                created_at=utcnow(),
            )
        )
    try:
        refused = _refused(lambda: corrections.queue(gate, worker))
        assert refused.refusal is not None and refused.refusal.slug == "suspended"
        page = client.get("/desk/corrections")
        assert page.status_code == 403
        assert refused.refusal.message.text("zh") in page.text
    finally:
        with runtime.transaction() as session:
            session.execute(
                update(Suspension).where(Suspension.actor == "grid.hx1").values(lifted_at=utcnow())
            )
    denied = _entries(client, request_id=worker.request_id, outcome="denied")
    assert [(e.action, e.reason) for e in denied] == [("correction.listed", "suspended")]
