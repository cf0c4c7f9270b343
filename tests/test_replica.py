"""A read replica serves lists, exports and statistics; everything that decides stays on
the primary (docs/postgresql.md, "What reads where").

The replica is a real streaming standby of the test server (`.ci/run` starts it, see
tests/pg_support.py). The proof that a read came from it: while its replay is paused
(`pg_wal_replay_pause()`), a resident added on the primary is not listed, exported or
counted; once replay catches up, it is. Consents, erasures (data keys), suspensions and
audit entries are read and written on the primary, so lag never shows an erased resident,
never ignores a revoked consent, and entries land where the log is.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import func, select

from api.settings import Settings
from audit.models import AuditEntry
from tests.demo_server import DemoServer, call, residents_in
from tests.factories import person
from tests.pg_support import (
    fresh_database,
    on_replica,
    replay_paused,
    require_replica,
    serve,
    wait_for_replay,
)
from vault.context import init_vault
from vault.errors import ResidentErased
from vault.models import Resident, ResidentRecord
from vault.services import Provenance

DEPARTMENT = "org_civil_affairs"
PURPOSE = "subsidy-review"
COMPANY = "org_anju_property"  # serves every building of cm_xingfu
CONSENT_PURPOSE = "property-notice"
COMMUNITY = "cm_xingfu"


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, postgres_template: str | None
) -> Iterator[DemoServer]:
    require_replica()
    home = tmp_path_factory.mktemp("replica-demo")
    with fresh_database(postgres_template, "rv_replica") as database:
        settings = Settings(
            home=home / "home",
            database_url=database,
            database_replica_url=on_replica(database),
            checkpoint_interval_seconds=0.5,
        )
        with serve(settings, residents=40) as demo:
            # The new database and its demo data exist on the standby only once replayed.
            wait_for_replay(demo.runtime.vault.engine)
            yield demo


def caught_up(server: DemoServer) -> None:
    wait_for_replay(server.runtime.vault.engine)


def listed(server: DemoServer, token: str, purpose: str = PURPOSE) -> list[str]:
    response = call(server, "GET", "/v1/residents", token, purpose, params={"limit": 500})
    assert response.status_code == 200, response.text
    decision_id = response.headers["Decision-Id"]
    items = [str(i["resident_id"]) for i in response.json()["items"]]
    # Every resident listed has its entry, committed on the primary before the answer.
    assert entries_on_primary(server, decision_id=decision_id) == len(items)
    return items


def exported(server: DemoServer, token: str) -> list[dict[str, Any]]:
    response = call(
        server,
        "GET",
        "/v1/exports/residents",
        token,
        PURPOSE,
        params={"format": "ndjson", "community": COMMUNITY, "fields": "name,low_income_status"},
        headers={"Justification": quote("年度低保复核（副本测试）")},
    )
    assert response.status_code == 200, response.text
    rows = [json.loads(line) for line in response.text.splitlines()]
    assert entries_on_primary(server, decision_id=response.headers["Decision-Id"]) == len(rows)
    return rows


def entries_on_primary(server: DemoServer, **where: Any) -> int:
    with server.runtime.vault.sessions() as session:
        query = select(func.count()).select_from(AuditEntry)
        for column, value in where.items():
            query = query.where(getattr(AuditEntry, column) == value)
        return int(session.scalar(query) or 0)


def add_resident(server: DemoServer, seed: int) -> str:
    """A new resident in an existing household of the community, on the primary only."""
    runtime = server.runtime
    with runtime.transaction() as session:
        household = session.scalar(
            select(Resident.household_id).where(Resident.id == residents_in(server, COMMUNITY)[0])
        )
        return runtime.vault.store.create(
            session, person(seed), Provenance(actor="test", channel="api"), household_id=household
        )


def residents_total(server: DemoServer, token: str) -> int:
    """The jurisdiction's published resident count (the statistics read path)."""
    response = call(
        server,
        "GET",
        "/v1/stats/residents",
        token,
        "community-statistics",
        params={"by": "community"},
    )
    assert response.status_code == 200, response.text
    total = next(t for t in response.json()["totals"] if t["level"] == "jurisdiction")
    return int(total["values"]["total"])


def test_the_service_reads_lists_from_a_real_standby(server: DemoServer) -> None:
    vault = server.runtime.vault
    assert vault.read_engine is not vault.engine
    with vault.read_engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT pg_is_in_recovery()").scalar() is True
    with vault.engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT pg_is_in_recovery()").scalar() is False


def test_readiness_checks_the_replica_and_reports_its_lag(server: DemoServer) -> None:
    ready = httpx.get(f"{server.url}/readyz", timeout=30)
    assert ready.status_code == 200, ready.text
    replica = ready.json()["checks"]["replica"]
    assert replica["status"] == "ok"
    lag = replica["replay_lag_seconds"]
    assert lag == "unknown" or float(lag) >= 0


def test_lists_exports_and_statistics_come_from_the_replica(server: DemoServer) -> None:
    token = server.client_token(DEPARTMENT)
    caught_up(server)
    before_stats = residents_total(server, token)
    with replay_paused():
        newcomer = add_resident(server, 8101)
        shown = server.pseudonym(DEPARTMENT, newcomer)
        assert shown not in listed(server, token)
        assert shown not in {r["resident_id"] for r in exported(server, token)}
        assert residents_total(server, token) == before_stats
        # The primary has it all along: a single read (which must be current) sees it.
        single = call(server, "GET", f"/v1/residents/{shown}", token, PURPOSE)
        assert single.status_code == 200, single.text
    caught_up(server)
    assert shown in listed(server, token)
    assert shown in {r["resident_id"] for r in exported(server, token)}
    assert residents_total(server, token) == before_stats + 1


def test_an_erased_resident_is_never_decrypted_from_a_lagging_replica(
    server: DemoServer,
) -> None:
    token = server.client_token(DEPARTMENT)
    runtime = server.runtime
    victim = add_resident(server, 8102)
    caught_up(server)
    assert server.pseudonym(DEPARTMENT, victim) in listed(server, token)
    with replay_paused():
        with runtime.transaction() as session:
            runtime.vault.store.erase(session, victim, actor="test", reason="resident asked")
        # The lagging replica still holds the resident's ciphertexts and an active row ...
        with runtime.vault.read_engine.connect() as replica:
            stale = replica.execute(
                select(func.count()).where(ResidentRecord.resident_id == victim)
            ).scalar()
            assert stale and stale > 0
        # ... but nothing decrypts them: the data key is read from the primary, where
        # erasure destroyed it, and the list leaves the resident out without an entry.
        assert server.pseudonym(DEPARTMENT, victim) not in listed(server, token)
        assert entries_on_primary(server, resident_id=victim, action="list") == 1
        runtime.vault.store.data_keys.cache.clear()
        with runtime.vault.read_sessions() as read, pytest.raises(ResidentErased):
            runtime.vault.store.read_many(read, [victim], ["name"])
    caught_up(server)


def test_consent_revoked_on_the_primary_is_honoured_at_once(server: DemoServer) -> None:
    company = server.client_token(COMPANY)
    resident = next(
        r
        for r in residents_in(server, COMMUNITY)
        if server.pseudonym(COMPANY, r) not in listed(server, company, CONSENT_PURPOSE)
    )
    own = server.resident_token(resident)
    body = {"recipient": COMPANY, "purpose": CONSENT_PURPOSE, "separate": True}
    granted = call(server, "POST", "/v1/me/consents", own, json=body)
    assert granted.status_code == 201, granted.text
    caught_up(server)
    shown = server.pseudonym(COMPANY, resident)
    assert shown in listed(server, company, CONSENT_PURPOSE)
    with replay_paused():
        consent_id = granted.json()["consent_id"]
        revoked = call(server, "POST", f"/v1/me/consents/{consent_id}/revoke", own)
        assert revoked.status_code == 200, revoked.text
        assert shown not in listed(server, company, CONSENT_PURPOSE)
    caught_up(server)


def test_no_replica_configured_reads_the_primary(tmp_path: Path, database_url: str) -> None:
    vault = init_vault(Settings(home=tmp_path / "home", database_url=database_url))
    try:
        assert vault.read_engine is vault.engine
        with vault.read_sessions() as session:
            assert session.get_bind() is vault.engine
    finally:
        vault.close()
