"""The hot path's caches (token state, subjects, suspensions, the district's data) follow
the change stamp: whatever changes what they hold takes effect on the next request, on
SQLite and on PostgreSQL with the OPA server, with no stale read even under concurrency."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from sqlalchemy import select, text

from audit.models import Suspension
from tests.demo_server import DemoServer, call, demo_server_fixture, residents_where
from vault.mandates import catalogue_categories, grant_mandate, revoke_mandate
from vault.models import new_id, utcnow
from vault.purposes import RegisteredPurpose
from vault.stamps import WATCHED, read_stamp_from

server = demo_server_fixture("stamps", residents=30)

PURPOSE = "subsidy-review"


def _stamp(server: DemoServer) -> int:
    return read_stamp_from(server.runtime.vault.engine)


def _read(server: DemoServer, token: str, resident: str) -> httpx.Response:
    return call(server, "GET", f"/v1/residents/{resident}", token, PURPOSE)


@pytest.fixture
def civil(server: DemoServer) -> tuple[str, str]:
    """A civil-affairs token and a resident it reads, with every cache warmed by a read."""
    token = server.client_token("org_civil_affairs")
    resident = server.pseudonym("org_civil_affairs", residents_where(server)[0])
    assert _read(server, token, resident).status_code == 200
    assert _read(server, token, resident).status_code == 200
    return token, resident


def test_every_watched_table_moves_the_stamp_through_a_trigger(server: DemoServer) -> None:
    engine = server.runtime.vault.engine
    if engine.dialect.name == "sqlite":
        query = "SELECT tbl_name FROM sqlite_master WHERE type = 'trigger' AND name LIKE :n"
    else:
        query = (
            "SELECT event_object_table FROM information_schema.triggers WHERE trigger_name LIKE :n"
        )
    with engine.connect() as connection:
        tables = set(connection.scalars(text(query), {"n": "%change_stamp%"}))
    assert tables == set(WATCHED)


def test_a_suspension_and_its_lifting_take_effect_on_the_next_request(
    server: DemoServer, civil: tuple[str, str]
) -> None:
    token, resident = civil
    client_id = server.client("org_civil_affairs")["client_id"]
    before = _stamp(server)
    with server.runtime.transaction() as session:
        session.add(
            Suspension(
                id=new_id("su"),
                actor=client_id,
                actor_kind="client",
                reason="alert:test",
                created_at=utcnow(),
            )
        )
    assert _stamp(server) > before
    refused = _read(server, token, resident)
    assert refused.status_code == 403 and refused.json()["type"].endswith("/suspended")
    with server.runtime.transaction() as session:
        for row in session.scalars(select(Suspension).where(Suspension.actor == client_id)):
            row.lifted_at, row.lifted_by = utcnow(), "test"
    assert _read(server, token, resident).status_code == 200


def test_a_disabled_client_is_refused_on_the_next_request(
    server: DemoServer, civil: tuple[str, str]
) -> None:
    token, resident = civil
    client_id = server.client("org_civil_affairs")["client_id"]
    with server.runtime.vault.engine.begin() as connection:
        revoked_at = connection.scalar(
            text("SELECT revoked_at FROM oauth_clients WHERE client_id = :c"), {"c": client_id}
        )
        assert revoked_at is None
        connection.execute(
            text("UPDATE oauth_clients SET revoked_at = :t WHERE client_id = :c"),
            {"t": utcnow(), "c": client_id},
        )
    try:
        refused = _read(server, token, resident)
        assert refused.status_code == 401, refused.text
    finally:
        with server.runtime.vault.engine.begin() as connection:
            connection.execute(
                text("UPDATE oauth_clients SET revoked_at = NULL WHERE client_id = :c"),
                {"c": client_id},
            )
    assert _read(server, token, resident).status_code == 200


def test_a_revoked_mandate_has_no_stale_read_under_concurrent_readers(
    server: DemoServer, civil: tuple[str, str]
) -> None:
    """Readers hammer a cached read while the mandate is revoked: every read that began
    after the revocation committed is refused."""
    token, resident = civil
    answers: list[tuple[float, int]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def reader() -> None:
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                began = time.monotonic()
                status = client.get(
                    f"{server.url}/v1/residents/{resident}",
                    headers={"Authorization": f"Bearer {token}", "Purpose": PURPOSE},
                ).status_code
                with lock:
                    answers.append((began, status))

    readers = [threading.Thread(target=reader) for _ in range(16)]
    for thread in readers:
        thread.start()
    try:
        time.sleep(1.0)
        with server.runtime.transaction() as session:
            revoke_mandate(session, "org_civil_affairs", PURPOSE, actor="test")
        revoked_at = time.monotonic()
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in readers:
            thread.join()
        with server.runtime.transaction() as session:
            registered = session.get(RegisteredPurpose, PURPOSE)
            assert registered is not None
            grant_mandate(
                session,
                "org_civil_affairs",
                PURPOSE,
                registered.definition["actions"],
                field_categories=catalogue_categories(server.runtime.vault.store.catalogue),
                actor="test",
            )
    before = [status for began, status in answers if began < revoked_at]
    after = [status for began, status in answers if began > revoked_at]
    assert before and after
    assert 200 in before
    assert [s for s in after if s != 403] == []
    assert _read(server, token, resident).status_code == 200
