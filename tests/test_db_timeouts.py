"""PostgreSQL connections carry the settings' limits, and a statement over its timeout is
a clear, retryable refusal that leaves nothing half-written (docs/postgresql.md)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

import vault.db
from api.settings import Settings
from audit.models import AuditEntry
from tests.demo_server import DemoServer, call, residents_in
from tests.pg_support import fresh_database, serve
from vault.db import PoolLimits, engines_for, is_timeout, make_engine

SLOW_MS = 400


@pytest.fixture
def pg_settings(tmp_path: Path, postgres_template: str | None) -> Iterator[Settings]:
    with fresh_database(postgres_template, "rv_timeouts") as database:
        yield Settings(
            home=tmp_path / "home",
            database_url=database,
            database_statement_timeout_ms=SLOW_MS,
            database_pool_size=3,
            database_max_overflow=1,
            database_pool_timeout_seconds=0.3,
        )


def test_connections_carry_timeouts_pool_sizes_and_a_name(pg_settings: Settings) -> None:
    engine, read_engine = engines_for(pg_settings)
    try:
        assert read_engine is engine  # no replica configured
        with engine.connect() as connection:
            shown = {
                name: connection.exec_driver_sql(f"SHOW {name}").scalar()
                for name in (
                    "statement_timeout",
                    "lock_timeout",
                    "idle_in_transaction_session_timeout",
                    "application_name",
                )
            }
        assert shown == {
            "statement_timeout": f"{SLOW_MS}ms",
            "lock_timeout": f"{SLOW_MS}ms",
            "idle_in_transaction_session_timeout": "1min",
            "application_name": "resident-vault",
        }
        pool = engine.pool
        assert pool.size() == 3  # type: ignore[attr-defined]
        assert pool._max_overflow == 1  # type: ignore[attr-defined]
        assert pool._timeout == pytest.approx(0.3)  # type: ignore[attr-defined]
    finally:
        engine.dispose()


def test_a_connection_the_server_dropped_while_idle_is_replaced_unseen(
    pg_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connections idle for a while are pinged at checkout (vault.db.ping_when_idle): one
    the server ended (a restart, a failover, an idle timeout) is swapped for a new one, and
    the request never sees it."""
    monkeypatch.setattr(vault.db, "IDLE_PING_SECONDS", 0.0)
    engine = make_engine(pg_settings.database_url, PoolLimits(pool_size=1, max_overflow=0))
    try:
        with engine.connect() as connection:
            first = connection.scalar(text("SELECT pg_backend_pid()"))
        admin = create_engine(pg_settings.database_url)
        with admin.begin() as connection:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
        admin.dispose()
        with engine.connect() as connection:
            second = connection.scalar(text("SELECT pg_backend_pid()"))
        assert second != first
    finally:
        engine.dispose()


def test_a_slow_statement_is_cancelled_by_the_server(pg_settings: Settings) -> None:
    engine, _ = engines_for(pg_settings)
    try:
        with engine.connect() as connection, pytest.raises(OperationalError) as caught:
            connection.execute(text("SELECT pg_sleep(5)"))
        assert is_timeout(caught.value)
        # A lock held elsewhere: the waiter gives up after lock_timeout, not forever.
        with engine.connect() as holder, engine.connect() as waiter:
            holder.execute(text("CREATE TABLE rv_lock_probe (n int)"))
            holder.commit()
            holder.execute(text("LOCK TABLE rv_lock_probe IN ACCESS EXCLUSIVE MODE"))
            with pytest.raises(OperationalError) as locked:
                waiter.execute(text("SELECT * FROM rv_lock_probe"))
            assert is_timeout(locked.value)
            holder.rollback()
    finally:
        engine.dispose()


def test_a_full_pool_times_out_clearly(pg_settings: Settings) -> None:
    engine, _ = engines_for(pg_settings)
    held = [engine.connect() for _ in range(4)]  # pool of 3 plus 1 overflow
    try:
        with pytest.raises(PoolTimeout) as caught:
            engine.connect()
        assert is_timeout(caught.value)
    finally:
        for connection in held:
            connection.close()
        engine.dispose()


@pytest.fixture
def slow_server(pg_settings: Settings) -> Iterator[DemoServer]:
    with serve(pg_settings, residents=20) as demo:
        yield demo


def test_a_write_over_the_timeout_is_503_retryable_and_writes_nothing(
    slow_server: DemoServer,
) -> None:
    server = slow_server
    worker = server.user("community_worker")
    token = server.login(worker["username"], worker["password"], "residents:read residents:write")[
        "access_token"
    ]
    resident = residents_in(server, "cm_xingfu")[-1]
    store = server.runtime.vault.store
    with server.runtime.vault.sessions() as session:
        phone_before = store.read(session, resident, ["phone"]).get("phone")
    engine = server.runtime.vault.engine
    with engine.begin() as connection:
        # The write's record update sleeps past the statement timeout, on the server.
        connection.execute(
            text(
                "CREATE FUNCTION rv_slow() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN PERFORM pg_sleep(3); RETURN NULL; END $$"
            )
        )
        connection.execute(
            text(
                "CREATE TRIGGER rv_slow BEFORE UPDATE ON resident_records "
                "FOR EACH STATEMENT EXECUTE FUNCTION rv_slow()"
            )
        )
    entries_before = _entries(server)
    metrics = server.app.state.metrics
    timeouts_before = metrics.registry.get_sample_value("vault_database_timeouts_total") or 0
    try:
        response = call(
            server,
            "PATCH",
            f"/v1/residents/{resident}",
            token,
            "counter-service",
            json={"fields": {"phone": "13600002222"}},
        )
        assert response.status_code == 503, response.text
        # counted, so an operator's alert sees it (docs/operations.md)
        timeouts = metrics.registry.get_sample_value("vault_database_timeouts_total")
        assert timeouts == timeouts_before + 1
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["type"].endswith("/problems/database-timeout")
        assert int(response.headers["Retry-After"]) >= 1
        # Nothing half-written: the value, its provenance and no 'write' entry.
        store.data_keys.cache.clear()
        with server.runtime.vault.sessions() as session:
            assert store.read(session, resident, ["phone"]).get("phone") == phone_before
        assert isinstance(entries_before, dict)
        assert _entries(server, action="write") == entries_before.get("write", 0)
    finally:
        with engine.begin() as connection:
            connection.execute(text("DROP TRIGGER rv_slow ON resident_records"))
    retried = call(
        server,
        "PATCH",
        f"/v1/residents/{resident}",
        token,
        "counter-service",
        json={"fields": {"phone": "13600002222"}},
    )
    assert retried.status_code == 200, retried.text


def test_a_burst_beyond_the_pool_is_served_or_told_to_retry(slow_server: DemoServer) -> None:
    """More requests at once than the pool has connections (3 + 1 here): each is answered,
    or refused as retryable with Retry-After once no connection frees up within the pool
    timeout; never an internal error."""
    server = slow_server
    token = server.client_token("org_civil_affairs")
    resident = server.pseudonym("org_civil_affairs", residents_in(server, "cm_xingfu")[0])
    answers: list[tuple[int, str | None]] = []

    def read() -> None:
        response = call(server, "GET", f"/v1/residents/{resident}", token, "subsidy-review")
        kind = response.json().get("type") if response.status_code != 200 else None
        if response.status_code == 503:
            assert int(response.headers["Retry-After"]) >= 1
        answers.append((response.status_code, kind))

    threads = [threading.Thread(target=read) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 12
    assert set(answers) <= {(200, None), (503, f"{server.url}/problems/database-timeout")}
    assert (200, None) in answers


def _entries(server: DemoServer, **where: str) -> dict[str, int] | int:
    with server.runtime.vault.sessions() as session:
        if where:
            query = select(func.count()).select_from(AuditEntry)
            for column, value in where.items():
                query = query.where(getattr(AuditEntry, column) == value)
            return int(session.scalar(query) or 0)
        rows = session.execute(select(AuditEntry.action, func.count()).group_by(AuditEntry.action))
        return {action: int(n) for action, n in rows}


def test_migrating_at_start_up_leaves_the_pool_with_its_timeouts(
    slow_server: DemoServer,
) -> None:
    """Migrations run with a longer timeout of their own (SET LOCAL), never leaking it
    into the connections the service then serves requests on."""
    engine = slow_server.runtime.vault.engine
    held = [engine.connect() for _ in range(3)]
    try:
        assert {c.exec_driver_sql("SHOW statement_timeout").scalar() for c in held} == {
            f"{SLOW_MS}ms"
        }
    finally:
        for connection in held:
            connection.close()
