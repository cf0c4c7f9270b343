"""OPA as a sidecar, configured as deployed: deploy/opa/config.yaml polls a bundle server
for the bundle `resident-vault policy bundle` builds, and deploy/opa/mask.rego masks the
decision log. The service (wired from VAULT_OPA_* settings) serves decisions only under
the expected revision; another revision gets 503s and "not ready" until the expected one
is back. OPA's decision log names each decision our audit entries name, and holds none
of the resident's data.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from api.cli.main import app as cli
from audit.models import AuditEntry
from policies import OpaServerEngine, build_bundle, load_bundle
from policies.bundle import code_revision
from policies.opa_server import free_port, local_opa_server
from tests.demo_server import DemoServer, call, residents_in, run_demo_server
from tests.test_api_opa import _opa

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "opa"
RESOURCE = "bundles/resident-vault.tar.gz"
READER = "org_civil_affairs"
PURPOSE = "subsidy-review"


@dataclass
class Sidecar:
    url: str
    log: Path
    publish: Callable[[Path], None]
    shipped: str  # the revision of the shipped bundle
    modified: str  # the revision of a bundle built from modified data
    shipped_bundle: Path
    modified_bundle: Path


@contextlib.contextmanager
def bundle_server(root: Path) -> Iterator[str]:
    """A static HTTP server for bundles, as nginx or object storage would be."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _revision_of(url: str) -> str | None:
    bundles = httpx.get(f"{url}/v1/data/system/bundles").json().get("result") or {}
    entry = bundles.get("vault") or {}
    revision = entry.get("manifest", {}).get("revision")
    return revision if isinstance(revision, str) else None


def _until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    opa = _opa()
    work = tmp_path_factory.mktemp("sidecar")
    shipped = work / "shipped.tar.gz"
    built = CliRunner().invoke(cli, ["policy", "bundle", "-o", str(shipped)], env={"OPA_BIN": opa})
    assert built.exit_code == 0, built.output
    data = load_bundle().data
    data["organisations"] = {**data.get("organisations", {})}  # a change of data only
    data["test_marker"] = "modified"
    modified_policy = load_bundle(data=data)
    modified = build_bundle(opa, modified_policy, work / "modified.tar.gz")
    served = work / "served"
    (served / "bundles").mkdir(parents=True)

    def publish(bundle: Path) -> None:
        staged = served / "bundles" / "incoming.tar.gz"
        shutil.copyfile(bundle, staged)
        staged.replace(served / RESOURCE)  # atomic, as a deployment should publish

    publish(shipped)
    log = work / "decisions.log"
    with (
        bundle_server(served) as bundles_url,
        local_opa_server(
            opa,
            config=DEPLOY / "config.yaml",
            # Poll every second here; the shipped configuration polls every 30-60 s.
            overrides=[
                "bundles.vault.polling.min_delay_seconds=1",
                "bundles.vault.polling.max_delay_seconds=1",
                f"persistence_directory={work / 'opa-persist'}",
            ],
            files=[DEPLOY / "mask.rego"],
            env={"VAULT_BUNDLE_SERVICE_URL": bundles_url},
            log=log,
        ) as url,
    ):
        yield Sidecar(
            url,
            log,
            publish,
            built.stdout.strip().splitlines()[0],
            modified_policy.revision,
            shipped,
            modified,
        )


@contextlib.contextmanager
def service_on(sidecar: Sidecar, home: Path, **env: str) -> Iterator[DemoServer]:
    """A service wired by settings alone: VAULT_OPA_URL (and any VAULT_OPA_* given)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VAULT_OPA_URL", sidecar.url)
        for name, value in env.items():
            patch.setenv(name, value)
        with run_demo_server(home, f"sqlite:///{home / 'vault.db'}", residents=30) as server:
            yield server


@pytest.fixture(scope="module")
def service(sidecar: Sidecar, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoServer]:
    with service_on(sidecar, tmp_path_factory.mktemp("svc")) as server:
        yield server


def _read(server: DemoServer, resident: str, token: str) -> httpx.Response:
    return call(
        server, "GET", f"/v1/residents/{server.pseudonym(READER, resident)}", token, PURPOSE
    )


def _publish_and_wait(sidecar: Sidecar, bundle: Path, revision: str) -> None:
    sidecar.publish(bundle)
    _until(lambda: _revision_of(sidecar.url) == revision, f"OPA to activate {revision}")


# -- the bundle --------------------------------------------------------------------------


def test_policy_bundle_command_builds_the_revision_opa_serves(
    tmp_path: Path, sidecar: Sidecar
) -> None:
    """`opa run --server --bundle` on the file `policy bundle` wrote reports the printed
    revision, which is the shipped policy's, and the engine pinned to it decides."""
    assert sidecar.shipped == load_bundle().revision
    with local_opa_server(_opa(), bundle=sidecar.shipped_bundle) as url:
        engine = OpaServerEngine(url, expected_revision=sidecar.shipped)
        try:
            assert engine.server_revision() == sidecar.shipped
            assert engine.revision == sidecar.shipped
        finally:
            engine.close()
    assert sidecar.modified != sidecar.shipped


def test_the_bundle_leaves_room_for_the_mask(sidecar: Sidecar) -> None:
    """The bundle owns data.vault only, so the mask loaded beside it stays loaded."""
    bundles = httpx.get(f"{sidecar.url}/v1/data/system/bundles").json()["result"]
    assert bundles["vault"]["manifest"]["roots"] == ["vault"]
    mask = httpx.post(
        f"{sidecar.url}/v1/data/system/log/mask", json={"input": {"input": {"phone": "1"}}}
    ).json()
    assert mask["result"] == ["/input/phone"]


# -- serving under the expected revision -----------------------------------------------------


def test_service_serves_decisions_under_the_shipped_revision(
    service: DemoServer, sidecar: Sidecar
) -> None:
    token = service.client_token(READER)
    resident = residents_in(service, "cm_xingfu")[0]
    response = _read(service, resident, token)
    assert response.status_code == 200, response.text
    assert code_revision(response.headers["Policy-Revision"]) == sidecar.shipped
    ready = httpx.get(f"{service.url}/readyz")
    assert ready.status_code == 200, ready.text
    assert code_revision(ready.json()["checks"]["policy"]["revision"]) == sidecar.shipped


def test_decision_log_correlates_with_audit_and_holds_no_personal_data(
    service: DemoServer, sidecar: Sidecar
) -> None:
    token = service.client_token(READER)
    resident = residents_in(service, "cm_xingfu")[1]
    with service.runtime.vault.sessions() as session:
        values = service.runtime.vault.store.read(session, resident, ["phone", "id_number"])
    pseudonym = service.pseudonym(READER, resident)
    read = _read(service, resident, token)
    found = call(
        service, "POST", "/v1/residents/search", token, PURPOSE, json={"phone": values["phone"]}
    )
    assert read.status_code == found.status_code == 200, (read.text, found.text)
    # Even a caller that sends personal data to OPA directly gets it masked out of the log.
    httpx.post(
        f"{sidecar.url}/v1/data/vault/decision/decision",
        json={
            "input": {
                "subject": {"type": "department", "user": resident, "phone": values["phone"]},
                "id_number": values["id_number"],
                "pseudonym": pseudonym,
            }
        },
    )
    decision_ids = {read.headers["Decision-Id"], found.headers["Decision-Id"]}

    def logged() -> list[dict[str, Any]]:
        lines = sidecar.log.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if '"decision_id"' in line]

    with service.runtime.vault.sessions() as session:
        evaluations = set(
            session.scalars(
                select(AuditEntry.evaluation_id).where(AuditEntry.decision_id.in_(decision_ids))
            )
        )
    assert evaluations and None not in evaluations
    _until(
        lambda: evaluations <= {r.get("decision_id") for r in logged()},
        "the decision log to name the audit entries' evaluations",
    )
    records = logged()
    ours = [r for r in records if r.get("decision_id") in evaluations]
    assert all(r["bundles"]["vault"]["revision"] == sidecar.shipped for r in ours)
    assert all(r["input"]["fields"] and isinstance(r["input"]["fields"][0], str) for r in ours)
    text = sidecar.log.read_text(encoding="utf-8")
    for secret in (resident, pseudonym, values["phone"], values["id_number"]):
        assert secret not in text
    assert any("/input/id_number" in r.get("erased", []) for r in records)


# -- refusing another revision ------------------------------------------------------------------


def test_another_revision_is_refused_until_the_expected_one_is_back(
    service: DemoServer, sidecar: Sidecar, capsys: pytest.CaptureFixture[str]
) -> None:
    token = service.client_token(READER)
    resident = residents_in(service, "cm_xingfu")[2]
    assert _read(service, resident, token).status_code == 200
    entries_before = _entries(service)
    _publish_and_wait(sidecar, sidecar.modified_bundle, sidecar.modified)
    try:
        # The engine trusts a revision it read for a few seconds; then it asks again.
        _until(lambda: _read(service, resident, token).status_code == 503, "a refusal")
        refused = _read(service, resident, token)
        assert refused.headers["content-type"].startswith("application/problem+json")
        body = refused.json()
        assert body["type"].endswith("/problems/policy-unavailable")
        assert body["cause"] == "revision-mismatch"
        assert body["reported_revision"] == sidecar.modified
        assert "fields" not in body
        ready = httpx.get(f"{service.url}/readyz")
        assert ready.status_code == 503
        problem = ready.json()
        assert problem["type"].endswith("/problems/not-ready")
        assert problem["checks"]["policy"]["status"] == "fail"
        assert problem["checks"]["policy"]["error"] == "revision-mismatch"
        assert problem["checks"]["database"]["status"] == "ok"
        metrics = httpx.get(f"{service.url}/metrics").text
        assert 'vault_policy_unavailable_total{cause="revision-mismatch"}' in metrics
        assert "vault_policy_ready 0.0" in metrics
        events = [
            json.loads(line)
            for line in capsys.readouterr().err.splitlines()
            if line.startswith("{") and '"policy.refused"' in line
        ]
        assert events and events[-1]["cause"] == "revision-mismatch"
        # Nothing was read under the refused revision: no access entry was written for it.
        assert not [
            e
            for e in _entries(service) - entries_before
            if e[1] == sidecar.modified and e[0] == "access"
        ]
    finally:
        _publish_and_wait(sidecar, sidecar.shipped_bundle, sidecar.shipped)
    _until(lambda: _read(service, resident, token).status_code == 200, "acceptance again")
    assert httpx.get(f"{service.url}/readyz").status_code == 200


def test_a_pinned_revision_is_accepted_and_recorded(
    sidecar: Sidecar, tmp_path: Path, service: DemoServer
) -> None:
    """VAULT_OPA_EXPECTED_REVISION pins another bundle: that one serves, and its revision
    goes on the record as the one in force."""
    _publish_and_wait(sidecar, sidecar.modified_bundle, sidecar.modified)
    try:
        with service_on(
            sidecar, tmp_path / "pinned", VAULT_OPA_EXPECTED_REVISION=sidecar.modified
        ) as pinned:
            token = pinned.client_token(READER)
            response = _read(pinned, residents_in(pinned, "cm_xingfu")[0], token)
            assert response.status_code == 200, response.text
            assert code_revision(response.headers["Policy-Revision"]) == sidecar.modified
            assert httpx.get(f"{pinned.url}/readyz").status_code == 200
            recorded = {
                (action, code_revision(revision or ""))
                for _kind, revision, action in _entries(pinned)
                if action == "policy.revision_in_force"
            }
            assert ("policy.revision_in_force", sidecar.modified) in recorded
    finally:
        _publish_and_wait(sidecar, sidecar.shipped_bundle, sidecar.shipped)


def test_opa_down_is_not_ready_and_refuses(tmp_path: Path) -> None:
    """No OPA at the configured URL: the service starts, says not ready, and refuses."""
    dead = Sidecar(
        f"http://127.0.0.1:{free_port()}",
        tmp_path / "none.log",
        lambda _: None,
        load_bundle().revision,
        "",
        tmp_path,
        tmp_path,
    )
    with service_on(dead, tmp_path / "home") as server:
        token = server.client_token(READER)
        refused = _read(server, residents_in(server, "cm_xingfu")[0], token)
        assert refused.status_code == 503
        assert refused.json()["cause"] == "unavailable"
        ready = httpx.get(f"{server.url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["policy"]["error"] == "unavailable"
        assert ready.json()["detail"] == "policy"


def _entries(server: DemoServer) -> set[tuple[str, str | None, str]]:
    with server.runtime.vault.sessions() as session:
        return {
            (kind, revision, action)
            for kind, revision, action in session.execute(
                select(AuditEntry.kind, AuditEntry.policy_revision, AuditEntry.action)
            )
        }
