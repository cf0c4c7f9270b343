"""The public audit endpoints, checked the way an outside verifier would check them."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from access.runtime import init_runtime
from api.http.app import create_app
from api.settings import Settings
from audit import EntryDraft
from audit.checkpoint import verify_checkpoint
from audit.merkle import leaf_hash, verify_consistency, verify_inclusion


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    settings = Settings(home=tmp_path / "home", database_url=database_url)
    init_runtime(settings).close()
    return settings


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, background=False)) as test_client:
        yield test_client


def _record(client: TestClient, count: int) -> list[bytes]:
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with runtime.transaction() as session:
        runtime.audit.record(
            session,
            [
                EntryDraft(action="read", outcome="allowed", channel="api", resident_id=f"r_{n}")
                for n in range(count)
            ],
        )
    runtime.audit.checkpoint(runtime.vault.sessions)
    with runtime.vault.sessions() as session:
        size = runtime.audit.tree_size(session)
        return [runtime.audit.entry_at(session, i).canonical for i in range(size)]


def test_no_checkpoint_yet_is_a_problem_document(client: TestClient) -> None:
    response = client.get("/v1/audit/checkpoint")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/problems/not-found")


def test_an_outside_verifier_checks_proofs_with_the_served_key(client: TestClient) -> None:
    entries = _record(client, 5)  # the service's own start-up event comes first
    first_size = len(entries)
    first = client.get("/v1/audit/checkpoint").text
    entries += _record(client, 4)[first_size:]
    size = len(entries)
    key = client.get("/v1/audit/public-key").text.strip()
    latest = verify_checkpoint(client.get("/v1/audit/checkpoint").text, key)
    assert latest.size == size == first_size + 4
    for index, entry in enumerate(entries):
        body = client.get(
            "/v1/audit/proofs/inclusion", params={"index": index, "tree_size": size}
        ).json()
        proof = [base64.b64decode(h) for h in body["hashes"]]
        assert verify_inclusion(leaf_hash(entry), index, size, proof, latest.root)
    older = verify_checkpoint(first, key)
    body = client.get(
        "/v1/audit/proofs/consistency", params={"first": first_size, "second": size}
    ).json()
    proof = [base64.b64decode(h) for h in body["hashes"]]
    assert verify_consistency(first_size, size, older.root, latest.root, proof)
    history = client.get("/v1/audit/checkpoints").json()["items"]
    assert [h["tree_size"] for h in history] == [first_size, size]
    assert all(h["signed_at"].endswith("+00:00") for h in history)


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/v1/audit/proofs/inclusion", {"index": 7, "tree_size": 3}, 404),
        ("/v1/audit/proofs/inclusion", {"index": 0, "tree_size": 99}, 404),
        ("/v1/audit/proofs/inclusion", {"index": -1, "tree_size": 3}, 422),
        ("/v1/audit/proofs/consistency", {"first": 0, "second": 3}, 422),
        ("/v1/audit/proofs/consistency", {"first": 3, "second": 2}, 404),
        ("/v1/audit/proofs/consistency", {"first": "x", "second": 2}, 422),
    ],
)
def test_bad_proof_requests_get_problem_details(
    client: TestClient, path: str, params: dict[str, object], status: int
) -> None:
    _record(client, 3)
    response = client.get(path, params=params)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == status


def test_problem_types_resolve_to_pages(client: TestClient) -> None:
    page = client.get("/problems/audit-unavailable")
    assert page.status_code == 200 and "审计日志不可用" in page.text
    # A type nobody defined is a 404 page in the request's language, from the catalogue.
    unknown = client.get("/problems/no-such-problem")
    assert unknown.status_code == 404 and "未知问题" in unknown.text
    english = client.get("/problems/no-such-problem", headers={"Accept-Language": "en"})
    assert english.status_code == 404 and "Unknown problem" in english.text
    assert "未知" not in english.text and english.headers["content-language"] == "en"
