"""The OpenAPI document is a contract tools can hold the service to (issue 19 item 6).

* schemathesis, with its default checks and phases, against a live demo server with a
  department's token and a `Purpose` header: no 5xx, no undocumented status or media type,
  no answer outside its schema, no schema-valid request refused and no invalid one taken.
* openapi-python-client generates a client from `/openapi.json` (into a temporary
  directory), which reads, lists, exports, consents and fetches an audit proof with typed
  results.
* The document itself: every operation's success has a schema, and every refusal is a
  problem in `application/problem+json`.

The server is configured as an operator could configure it, so that a few thousand requests
in a minute are normal work: rate limits raised (VAULT_RATE_LIMIT_*) and no alert kind
suspending its actor (VAULT_ALERT_SUSPEND_ON=""). schemathesis and openapi-python-client
are in the `test` extra; without them these tests skip, and under CI=true fail.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from access.runtime import init_runtime
from api.http.app import create_app
from api.settings import Settings
from tests.conftest import IN_CI
from tests.demo_server import DemoServer, residents_where, run_demo_server

ROOT = Path(__file__).resolve().parent.parent
DEPARTMENT = "org_civil_affairs"
PURPOSE = "subsidy-review"
PROBLEM = "application/problem+json"
# Bounded: the coverage phase's cases (one per boundary of every parameter) are not, so the
# run takes about 30 s on 2 cores; fuzzing and stateful phases take this many per operation.
MAX_EXAMPLES = 5
# Work no operator would call abuse, in a minute: settings an operator can give.
OPERATOR = {
    "rate_limit_standard": 1_000_000,
    "rate_limit_sensitive": 1_000_000,
    "rate_limit_bulk": 1_000_000,
    "alert_suspend_on": "",
    "alert_scan_seconds": 3600.0,
    # Checkpoints every 10 s, the default, not every 0.5 s as other HTTP tests take them:
    # signing while thousands of entries are written would double the run.
    "checkpoint_interval_seconds": 10.0,
}


def _require(module: str) -> None:
    """The tool, or skip; under CI=true its absence fails the run (it is in the test extra)."""
    if importlib.util.find_spec(module) is not None:
        return
    if IN_CI:
        pytest.fail(f"CI=true but {module} is not installed: pip install -e '.[test]'")
    pytest.skip(f"{module} is not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoServer]:
    home = tmp_path_factory.mktemp("contract")
    with run_demo_server(
        home / "home", f"sqlite:///{home / 'vault.db'}", residents=4, **OPERATOR
    ) as demo:
        yield demo


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Purpose": PURPOSE}


# -- the document --------------------------------------------------------------------------


def test_every_success_has_a_schema_and_every_refusal_is_a_problem(server: DemoServer) -> None:
    document = httpx.get(f"{server.url}/openapi.json").json()
    untyped, not_problems = [], []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, answer in operation["responses"].items():
                content = answer.get("content", {})
                if status.startswith("2") and not all(c.get("schema") for c in content.values()):
                    untyped.append(f"{method} {path} {status}")
                oauth = path.startswith(("/oauth/", "/.well-known/"))
                if status[0] in "45" and not oauth and set(content) != {PROBLEM}:
                    not_problems.append(f"{method} {path} {status}")
    assert untyped == [] and not_problems == []
    search = document["paths"]["/v1/residents/search"]["post"]
    assert {"401", "403", "404", "413", "422", "429"} <= set(search["responses"])
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert {"Problem", "Record", "RecordPage", "InclusionProof"} <= set(
        document["components"]["schemas"]
    )


def test_the_answers_are_what_the_document_says(server: DemoServer) -> None:
    token = server.client_token(DEPARTMENT)
    export = httpx.get(f"{server.url}/v1/exports/residents", headers=_headers(token))
    keys = httpx.get(f"{server.url}/v1/receipt-keys")
    assert keys.headers["content-type"].startswith("application/jwk-set+json")
    empty = httpx.post(f"{server.url}/v1/residents/search", json={}, headers=_headers(token))
    assert empty.status_code == 422 and empty.headers["content-type"].startswith(PROBLEM)
    huge = httpx.get(f"{server.url}/v1/audit/checkpoints", params={"since": 2**63})
    assert huge.status_code == 422 and huge.json()["errors"][0]["field"] == "since"
    assert export.status_code in (200, 403)  # a justification may be needed: a problem then
    if export.status_code == 200:
        assert export.headers["content-type"].startswith("application/x-ndjson")


def test_a_method_a_path_does_not_take_is_a_405_with_allow(server: DemoServer) -> None:
    for method, path, allowed in (
        ("DELETE", "/v1/residents", "GET, POST"),
        ("PUT", "/oauth/authorize", "GET, POST"),
        ("GET", "/v1/decisions/explain", None),  # a decision id, for GET: not found
        ("OPTIONS", "/v1/decisions/explain", "POST"),
    ):
        response = httpx.request(method, f"{server.url}{path}")
        if allowed is None:
            assert response.status_code == 401  # GET /v1/decisions/{decision_id}
            continue
        assert response.status_code == 405, (method, path)
        assert response.headers["allow"] == allowed
        body = response.json()
        assert response.headers["content-type"].startswith(PROBLEM)
        assert body["type"] == f"{server.url}/problems/method-not-allowed" and body["detail"]


@pytest.mark.parametrize("name", ["response_type", "scope", "code_challenge_method", "client_id"])
def test_an_authorize_value_authlib_cannot_quote_is_refused_not_a_500(
    server: DemoServer, name: str
) -> None:
    """Found by schemathesis: a quote in response_type made authlib raise on its own error
    description (RFC 6749 section 5.2 allows no quote there)."""
    public = server.credentials["public_clients"][0]
    query = {
        "response_type": "code",
        "client_id": public["client_id"],
        "redirect_uri": public["redirect_uris"][0],
        "scope": "me",
        "code_challenge": "x" * 43,
        "code_challenge_method": "S256",
        name: 'S`Iq-zP*"',
    }
    for method in ("GET", "POST"):
        answer = httpx.request(method, f"{server.url}/oauth/authorize", params=query)
        assert 400 <= answer.status_code < 500, (method, answer.status_code)


def test_an_empty_purpose_in_a_consent_request_is_a_422_problem(server: DemoServer) -> None:
    """Found by schemathesis: the body's purpose was any string, and "" was a 400."""
    token = server.client_token(DEPARTMENT)
    answer = httpx.post(
        f"{server.url}/v1/consent-requests",
        json={"resident_id": "r_0", "purpose": ""},
        headers=_headers(token),
    )
    assert answer.status_code == 422 and answer.headers["content-type"].startswith(PROBLEM)


def test_problem_types_live_under_the_public_origin(tmp_path: Path) -> None:
    public = "https://vault.example.gov.cn"
    settings = Settings(
        home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'v.db'}", public_url=public
    )
    init_runtime(settings).close()
    with TestClient(create_app(settings, background=False)) as client:
        refused = client.get("/v1/audit/checkpoints", params={"since": 2**63})
        unknown = client.get("/v1/nothing-here", headers={"Accept-Language": "en"})
    assert refused.json()["type"] == f"{public}/problems/validation-error"
    assert unknown.json() == {
        "type": f"{public}/problems/not-found",
        "title": "Not found",
        "status": 404,
        "detail": "Nothing was found, or it is outside your scope.",
    }


# -- a generated client ------------------------------------------------------------------------


GENERATOR_CONFIG = """\
project_name_override: rv-client
package_name_override: rv_client
content_type_overrides:
  application/jose: text/plain
"""


@pytest.fixture(scope="module")
def client_package(server: DemoServer, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The client openapi-python-client generates from the live `/openapi.json`."""
    _require("openapi_python_client")
    work = tmp_path_factory.mktemp("client")
    (work / "openapi.json").write_text(httpx.get(f"{server.url}/openapi.json").text, "utf-8")
    (work / "config.yaml").write_text(GENERATOR_CONFIG, "utf-8")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(work / "openapi.json"),
            "--config",
            str(work / "config.yaml"),
            "--output-path",
            str(work / "rv_client"),
            "--meta",
            "none",
        ],
        capture_output=True,
        text=True,
        cwd=work,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout, done.stdout  # every operation and answer generated
    sys.path.insert(0, str(work))
    try:
        yield importlib.import_module("rv_client")
    finally:
        sys.path.remove(str(work))
        for name in [m for m in sys.modules if m == "rv_client" or m.startswith("rv_client.")]:
            del sys.modules[name]


def _api(package: Any, module: str) -> Any:
    return importlib.import_module(f"{package.__name__}.api.{module}")


def test_a_generated_client_makes_typed_calls(server: DemoServer, client_package: Any) -> None:
    resident_id = residents_where(server)[0]
    with (
        client_package.AuthenticatedClient(
            base_url=server.url, token=server.client_token(DEPARTMENT), headers={"Purpose": PURPOSE}
        ) as department,
        client_package.AuthenticatedClient(
            base_url=server.url, token=server.resident_token(resident_id)
        ) as me,
    ):
        _department_calls(server, client_package, department, resident_id)
        _resident_calls(server, client_package, me, resident_id)


def _department_calls(server: DemoServer, package: Any, department: Any, resident_id: str) -> None:
    """List, read (by the department's pseudonym), export."""
    models = importlib.import_module(f"{package.__name__}.models")
    listing = _api(package, "residents.list_residents").sync(client=department, limit=2)
    assert isinstance(listing, models.RecordPage) and len(listing.items) == 2
    assert all(isinstance(r, models.Record) for r in listing.items)
    named = server.pseudonym(DEPARTMENT, resident_id)
    read = _api(package, "residents.read_resident").sync(named, client=department)
    assert isinstance(read, models.Record) and read.resident_id == named
    assert read.treatments.additional_properties  # field -> clear | masked | ...
    absent = _api(package, "residents.read_resident").sync("ps_nobody", client=department)
    assert isinstance(absent, models.Problem) and absent.status == 404
    assert absent.type_ == f"{server.url}/problems/not-found" and absent.detail
    # NDJSON, as its media type says, one record per line; or a typed problem (a bulk read
    # of sensitive fields may need a Justification).
    exported = _api(package, "residents.export_residents").sync_detailed(client=department)
    if exported.status_code == 200:
        lines = [json.loads(line) for line in exported.content.decode().splitlines()]
        assert lines and all("resident_id" in line for line in lines)
    else:
        assert isinstance(exported.parsed, models.Problem) and exported.status_code == 403


def _resident_calls(server: DemoServer, package: Any, me: Any, resident_id: str) -> None:
    """The resident's own copy, their consents, and a proof of the department's read."""
    models = importlib.import_module(f"{package.__name__}.models")
    copy = _api(package, "me_residents.my_export").sync(client=me)
    assert isinstance(copy, models.MyCopy) and copy.resident_id == resident_id
    consents = _api(package, "consent.my_consents").sync(client=me)
    assert isinstance(consents, models.MyConsents) and consents.legal_bases
    assert all(isinstance(c, models.LegalBasis) for c in consents.legal_bases)
    server.runtime.audit.checkpoint(server.runtime.vault.sessions)  # as the loop would
    accesses = _api(package, "me_residents.my_accesses").sync(client=me, limit=200)
    assert isinstance(accesses, models.MyAccessPage)
    entry = next(e for e in accesses.items if e.organisation == DEPARTMENT and e.proof)
    assert isinstance(entry, models.MyAccess) and isinstance(entry.index, int)
    proof = _api(package, "audit_log.inclusion").sync(
        client=me, index=entry.index, tree_size=entry.proof.tree_size
    )
    assert isinstance(proof, models.InclusionProof)
    assert proof.index == entry.index and proof.hashes == entry.proof.hashes


# -- schemathesis: last, since its wrong client secrets get 127.0.0.1 limited at /oauth/token


def test_schemathesis_finds_nothing(server: DemoServer, tmp_path: Path) -> None:
    _require("schemathesis")
    token = server.client_token(DEPARTMENT)
    # Cursors are values the service handed out (tests/schemathesis_hooks.py makes them).
    first = httpx.get(f"{server.url}/v1/residents", params={"limit": 1}, headers=_headers(token))
    cursors = [first.json()["next_cursor"]]
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
        "RV_ST_CURSORS": json.dumps(cursors),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{server.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {token}",
            "--header",
            f"Purpose: {PURPOSE}",
            "--max-examples",
            str(MAX_EXAMPLES),
            # Fixed, so CI is repeatable; change it to explore further.
            "--seed",
            "20261207",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # its own files (.schemathesis/) stay out of the checkout
        env=environment,
        timeout=600,
        check=False,
    )
    summary = done.stdout[done.stdout.find("SUMMARY") :]
    assert done.returncode == 0, done.stdout[-20_000:] + done.stderr[-3000:]
    assert "generated" in summary and "failures" not in summary.lower().split("test cases")[0]
