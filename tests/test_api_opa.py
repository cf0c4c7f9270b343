"""The gate against a real OPA server (the production sidecar), beside the embedded engine.

Same requests, same answers; and the audit entry names the OPA server's decision id, so
OPA's decision log and our audit log correlate.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from audit.models import AuditEntry
from policies import CachedEngine, OpaServerEngine, build_bundle, load_bundle
from policies.bundle import code_revision
from policies.opa_server import local_opa_server
from tests.conftest import IN_CI
from tests.demo_server import DemoServer, residents_where, run_demo_server
from tests.test_api_residents import entries_for


def _opa() -> str:
    path = os.environ.get("OPA_BIN", "")
    if path and os.access(path, os.X_OK):
        return path
    if IN_CI:
        pytest.fail("CI=true but OPA_BIN is not set: run .ci/install-opa and export OPA_BIN")
    pytest.skip("OPA_BIN is not set")


@pytest.fixture(scope="module")
def opa_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoServer]:
    opa = _opa()
    work = tmp_path_factory.mktemp("opa")
    bundle = load_bundle()
    archive = build_bundle(opa, bundle, work / "bundle.tar.gz")
    with local_opa_server(opa, bundle=archive, log=work / "decisions.log") as url:
        engine = CachedEngine(OpaServerEngine(url, expected_revision=bundle.revision))
        with run_demo_server(
            work / "home", f"sqlite:///{work / 'vault.db'}", engine=engine
        ) as demo:
            demo.opa_log = work / "decisions.log"  # type: ignore[attr-defined]
            yield demo


def _read(server: DemoServer, resident: str) -> httpx.Response:
    """Civil affairs reads a resident, by its own pseudonym for them."""
    token = server.client_token("org_civil_affairs")
    pseudonym = server.pseudonym("org_civil_affairs", resident)
    return httpx.get(
        f"{server.url}/v1/residents/{pseudonym}",
        headers={"Authorization": f"Bearer {token}", "Purpose": "subsidy-review"},
    )


def test_opa_server_decides_like_the_embedded_engine(
    opa_server: DemoServer, tmp_path: Path
) -> None:
    from policies import EmbeddedEngine

    resident = residents_where(opa_server)[0]
    response = _read(opa_server, resident)
    assert response.status_code == 200, response.text
    # The bundle's revision, then the district data's (policies.district).
    assert code_revision(response.headers["Policy-Revision"]) == load_bundle().revision
    assert ".d" in response.headers["Policy-Revision"]
    embedded = EmbeddedEngine()
    try:
        with run_demo_server(
            tmp_path / "home", f"sqlite:///{tmp_path / 'v.db'}", engine=embedded
        ) as local:
            same_place = residents_where(local)[0]
            expected = _read(local, same_place).json()["treatments"]
    finally:
        embedded.close()
    assert response.json()["treatments"] == expected


def test_audit_entry_names_the_opa_decision(opa_server: DemoServer) -> None:
    resident = residents_where(opa_server)[1]
    response = _read(opa_server, resident)
    (entry,) = entries_for(opa_server, decision_id=response.headers["Decision-Id"])
    assert isinstance(entry, AuditEntry)
    assert entry.policy_revision == response.headers["Policy-Revision"]
    # The evaluation it used (fresh or reused from the cache) is in OPA's decision log.
    log_path: Path = opa_server.opa_log  # type: ignore[attr-defined]
    logged = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert entry.evaluation_id in {record.get("decision_id") for record in logged}
