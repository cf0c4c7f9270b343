"""Operations over real sockets: readiness names each failing dependency (a database that
stops taking connections, an HSM that lost its keys), Prometheus metrics count requests by
route template, decisions, denials and rate limits, and neither traces nor metrics carry a
canary resident's id, pseudonym, phone or ID number after reads, searches and exports.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from access.runtime import init_runtime
from api.http.app import create_app
from api.oauth.service import create_demo_accounts
from api.settings import Settings
from policies import load_bundle
from policies.bundle import code_revision
from tests.conftest import _require_postgres
from tests.demo_server import (
    DemoServer,
    call,
    collect_stray_connections,
    free_port,
    residents_in,
    run_demo_server,
)
from tests.hsm import destroy_prefix, hsm_env, new_prefix, require_softhsm
from vault.config import SettingsInvalid
from vault.demo import populate

READER = "org_civil_affairs"
PURPOSE = "subsidy-review"
METRICS_TOKEN = "metrics-" + secrets.token_hex(8)


@contextmanager
def settings_env(**values: str) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in values.items():
            patch.setenv(name, value)
        yield


def scrape(server: DemoServer) -> str:
    response = httpx.get(
        f"{server.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def sample(metrics: str, name: str, **labels: str) -> float:
    """The value of one sample, 0 if absent."""
    for line in metrics.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# -- readiness --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoServer]:
    home = tmp_path_factory.mktemp("obs")
    with (
        settings_env(VAULT_METRICS_TOKEN=METRICS_TOKEN, VAULT_RATE_LIMIT_BULK="2"),
        run_demo_server(home / "home", f"sqlite:///{home / 'vault.db'}", 40) as demo,
    ):
        yield demo


def test_ready_reports_each_check_with_its_latency(server: DemoServer) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert set(checks) == {"database", "keyring", "policy"}
    assert all(c["status"] == "ok" and c["latency_ms"] >= 0 for c in checks.values())
    assert code_revision(checks["policy"]["revision"]) == load_bundle().revision


def test_database_that_stops_taking_connections_is_not_ready(tmp_path: Path) -> None:
    url = _require_postgres()
    name = f"rv_obs_{secrets.token_hex(4)}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    database = make_url(url).set(database=name).render_as_string(hide_password=False)
    try:
        with run_demo_server(tmp_path / "home", database, residents=10) as demo:
            assert httpx.get(f"{demo.url}/readyz").status_code == 200
            with admin.connect() as conn:  # the database goes away under the running service
                conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )
            try:
                ready = httpx.get(f"{demo.url}/readyz", timeout=30)
                assert ready.status_code == 503
                body = ready.json()
                assert body["type"].endswith("/problems/not-ready")
                assert body["detail"] == "database"
                assert body["checks"]["database"]["status"] == "fail"
                assert body["checks"]["keyring"]["status"] == "ok"
                assert name not in ready.text and "postgres@" not in ready.text
                assert httpx.get(f"{demo.url}/healthz").status_code == 200  # still alive
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            deadline = time.monotonic() + 20
            while httpx.get(f"{demo.url}/readyz").status_code != 200:
                assert time.monotonic() < deadline, "not ready again after the database returned"
                time.sleep(0.2)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        collect_stray_connections()


def test_hsm_that_lost_its_keys_is_not_ready(tmp_path: Path) -> None:
    """The keyring check wraps and unwraps a throwaway key in the token: once the token's
    keys are gone (a re-initialised token, a wrong slot), the node says so."""
    require_softhsm()
    prefix = new_prefix()
    with (
        settings_env(**hsm_env(prefix), VAULT_METRICS_TOKEN=METRICS_TOKEN),
        run_demo_server(tmp_path / "home", f"sqlite:///{tmp_path / 'v.db'}", 10) as demo,
    ):
        assert httpx.get(f"{demo.url}/readyz").status_code == 200
        destroy_prefix(prefix)
        ready = httpx.get(f"{demo.url}/readyz")
        assert ready.status_code == 503
        checks = ready.json()["checks"]
        assert checks["keyring"]["status"] == "fail"
        assert checks["database"]["status"] == checks["policy"]["status"] == "ok"
        assert ready.json()["detail"] == "keyring"
        metrics = scrape(demo)
        assert sample(metrics, "vault_readiness_failures_total", check="keyring") >= 1
        assert "vault_kek_active_age_seconds" not in metrics  # the keys are not readable


# -- metrics ----------------------------------------------------------------------------------


def test_metrics_need_the_token(server: DemoServer) -> None:
    anonymous = httpx.get(f"{server.url}/metrics")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    wrong = httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert "vault_http_requests_total" not in wrong.text


def test_metrics_count_requests_decisions_denials_and_limits(server: DemoServer) -> None:
    before = scrape(server)
    token = server.client_token(READER)
    resident = residents_in(server, "cm_xingfu")[0]
    read = call(
        server, "GET", f"/v1/residents/{server.pseudonym(READER, resident)}", token, PURPOSE
    )
    assert read.status_code == 200, read.text
    outside = call(
        server,
        "GET",
        f"/v1/residents/{server.pseudonym(READER, resident)}",
        token,
        "property-notice",
    )
    assert outside.status_code == 403, outside.text
    exports = [
        call(
            server,
            "GET",
            "/v1/exports/residents",
            token,
            PURPOSE,
            params={"format": "ndjson", "community": "cm_xingfu", "fields": "name"},
        )
        for _ in range(3)
    ]
    assert [e.status_code for e in exports][-1] == 429, [e.text for e in exports]
    after = scrape(server)

    def grew(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    route = "/v1/residents/{resident_id}"
    assert grew("vault_http_requests_total", method="GET", route=route, status="200") == 1
    assert grew("vault_http_requests_total", method="GET", route=route, status="403") == 1
    assert grew("vault_http_request_duration_seconds_count", method="GET", route=route) == 2
    assert grew("vault_policy_decisions_total", outcome="allowed", purpose=PURPOSE) >= 1
    assert grew("vault_policy_decisions_total", outcome="denied", purpose="property-notice") == 1
    assert (
        sum(
            grew("vault_policy_denials_total", reason=reason)
            for reason in re.findall(r'vault_policy_denials_total\{reason="([^"]+)"', after)
        )
        == 1
    )
    assert grew("vault_access_refusals_total", problem="policy-denied") == 1
    assert grew("vault_rate_limit_rejections_total", problem="rate-limited") == 1
    # Scrape-time state: audit lag, checkpoint and key age, the revision in force.
    assert sample(after, "vault_audit_pending_entries") >= 0
    assert "vault_audit_pending_oldest_age_seconds" in after
    assert sample(after, "vault_audit_checkpoint_tree_size") > 0
    assert sample(after, "vault_audit_checkpoint_age_seconds") >= 0
    assert sample(after, "vault_kek_active_age_seconds") > 0
    # The revision in force: the bundle's, then the district data's (policies.district).
    in_force = [
        line for line in after.splitlines() if line.startswith("vault_policy_revision_info{")
    ]
    assert len(in_force) == 1 and f'revision="{load_bundle().revision}.d' in in_force[0]
    assert sample(after, "vault_policy_ready") == 1
    # A path's resident id never becomes a label.
    assert server.pseudonym(READER, resident) not in after


def test_metrics_can_be_switched_off(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path, database_url=f"sqlite:///{tmp_path / 'v.db'}", metrics_enabled=False
    )
    init_runtime(settings).close()
    with TestClient(create_app(settings, background=False)) as client:
        assert client.get("/metrics").status_code == 404
        assert client.get("/healthz").status_code == 200


def _metrics_app(tmp_path: Path, **configured: Any) -> tuple[Settings, FastAPI]:
    """An app with these metrics settings alone (the module's server sets a token in the
    environment)."""
    unset = dict.fromkeys(("metrics_token", "metrics_listen", "metrics_allow_from"))
    settings = Settings(
        home=tmp_path, database_url=f"sqlite:///{tmp_path / 'v.db'}", **{**unset, **configured}
    )
    init_runtime(settings).close()
    return settings, create_app(settings, background=False)


def _scrape_from(app: FastAPI, address: str, **headers: str) -> int:
    with TestClient(app, client=(address, 40000)) as client:
        return client.get("/metrics", headers=headers).status_code


def test_metrics_answer_loopback_only_unless_configured(tmp_path: Path) -> None:
    _, app = _metrics_app(tmp_path / "default")
    assert _scrape_from(app, "127.0.0.1") == 200
    assert _scrape_from(app, "::1") == 200
    for outside in ("203.0.113.7", "10.1.2.3", "::ffff:203.0.113.7"):
        assert _scrape_from(app, outside) == 404, outside  # as if there were none
    # The operator names the scrapers' addresses...
    _, app = _metrics_app(tmp_path / "allowed", metrics_allow_from="203.0.113.0/24")
    assert _scrape_from(app, "203.0.113.7") == 200
    assert _scrape_from(app, "198.51.100.1") == 404
    # ...or gives them a credential, which opens /metrics to any address that shows it.
    token = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    _, app = _metrics_app(tmp_path / "token", metrics_token=METRICS_TOKEN)
    assert _scrape_from(app, "198.51.100.1", **token) == 200
    assert _scrape_from(app, "198.51.100.1") == 401


def test_metrics_on_a_listener_of_their_own(tmp_path: Path) -> None:
    _, app = _metrics_app(tmp_path, metrics_listen="127.0.0.1:0")
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 404  # not on the API's port
        port = app.state.metrics_listener.port
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert scraped.status_code == 200 and "vault_" in scraped.text
        assert httpx.get(f"http://127.0.0.1:{port}/v1/fields", timeout=10).status_code == 404
    with pytest.raises(httpx.ConnectError):  # stopped with the service
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_metrics_settings_are_checked() -> None:
    with pytest.raises(SettingsInvalid) as refused:
        Settings(metrics_listen="9464", metrics_allow_from="10.0.0.0/8, the office")
    problems = "\n".join(refused.value.problems)
    assert "VAULT_METRICS_LISTEN" in problems and "'the office'" in problems


# -- traces and the canary --------------------------------------------------------------------


@contextmanager
def traced_server(home: Path, provider: TracerProvider) -> Iterator[DemoServer]:
    """A demo service with tracing on and spans kept in memory."""
    settings = Settings(
        home=home,
        database_url=f"sqlite:///{home / 'vault.db'}",
        checkpoint_interval_seconds=0.5,
        tracing_enabled=True,
    )
    runtime = init_runtime(settings)
    try:
        with runtime.transaction() as session:
            populate(session, runtime.vault.store, 30)
        with runtime.transaction() as session:
            credentials = create_demo_accounts(session, runtime)
    finally:
        runtime.close()
    app = create_app(settings, tracer_provider=provider)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    try:
        yield DemoServer(f"http://127.0.0.1:{port}", credentials, settings, app)
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def _strings(span: ReadableSpan) -> list[str]:
    values: list[Any] = [span.name, *(span.attributes or {}).values()]
    for item in span.events:
        values += [item.name, *(item.attributes or {}).values()]
    return [str(v) for v in values]


def test_spans_and_metrics_carry_no_personal_data(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with traced_server(tmp_path / "home", provider) as server:
        canary = residents_in(server, "cm_xingfu")[0]
        with server.runtime.vault.sessions() as session:
            values = server.runtime.vault.store.read(session, canary, ["phone", "id_number"])
        pseudonym = server.pseudonym(READER, canary)
        secrets_ = [canary, pseudonym, values["phone"], values["id_number"]]
        token = server.client_token(READER)
        # A read by pseudonym, with the canary's phone as a client's request id.
        read = call(
            server,
            "GET",
            f"/v1/residents/{pseudonym}",
            token,
            PURPOSE,
            headers={"X-Request-ID": values["phone"]},
        )
        assert read.status_code == 200, read.text
        # A vault id in the path of an organisation's request (refused: not its name for it).
        assert call(server, "GET", f"/v1/residents/{canary}", token, PURPOSE).status_code == 404
        # The purpose as a query parameter, beside the canary's id number.
        queried = call(
            server,
            "GET",
            f"/v1/residents/{pseudonym}",
            token,
            params={"purpose": PURPOSE, "note": values["id_number"]},
        )
        assert queried.status_code == 200, queried.text
        for identifier in ({"phone": values["phone"]}, {"id_number": values["id_number"]}):
            found = call(server, "POST", "/v1/residents/search", token, PURPOSE, json=identifier)
            assert found.status_code == 200, found.text
            assert pseudonym in [i["resident_id"] for i in found.json()["items"]]
        export = call(
            server,
            "GET",
            "/v1/exports/residents",
            token,
            PURPOSE,
            params={
                "format": "ndjson",
                "community": "cm_xingfu",
                "fields": "name,phone,id_number,low_income_status",
            },
            headers={"Justification": quote("年度复核")},
        )
        assert export.status_code == 200, export.text
        assert pseudonym in export.text
        resident = server.resident_token(canary)
        assert call(server, "GET", "/v1/me", resident).status_code == 200
        metrics = httpx.get(f"{server.url}/metrics").text
        provider.force_flush()
        spans = exporter.get_finished_spans()

    requests = [s for s in spans if s.attributes and "http.route" in s.attributes]
    routes = {s.attributes["http.route"] for s in requests if s.attributes}
    assert {
        "/v1/residents/{resident_id}",
        "/v1/residents/search",
        "/v1/exports/residents",
        "/v1/me",
    } <= routes
    first = next(
        s
        for s in requests
        if s.attributes and s.attributes.get("vault.decision_id") == read.headers["Decision-Id"]
    )
    assert first.attributes is not None
    assert first.attributes["vault.policy.revision"] == read.headers["Policy-Revision"]
    assert first.attributes["http.response.status_code"] == 200
    assert "vault.request_id" not in first.attributes  # the client's id is not ours
    children = [s for s in spans if s.parent and s.parent.span_id == first.context.span_id]
    names = {s.name for s in spans if s.context.trace_id == first.context.trace_id}
    assert {"policy.evaluate", "audit.record"} <= names
    assert any(name.startswith("db ") for name in names)
    assert children
    own = next(s for s in requests if s.attributes and s.attributes.get("http.route") == "/v1/me")
    assert own.attributes is not None
    assert str(own.attributes["vault.request_id"]).startswith("req_")

    leaks = [
        (span.name, value)
        for span in spans
        for value in _strings(span)
        for secret in secrets_
        if secret in value
    ]
    assert leaks == []
    assert [secret for secret in secrets_ if secret in metrics] == []
    assert json.dumps([s.name for s in spans])  # spans were recorded at all
