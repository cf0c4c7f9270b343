"""Registration's refusals (api/oauth/service.py RegistrationError): each carries a catalogue
message, shown whole in either language, and every one the service raises is exercised."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from access.runtime import Runtime, init_runtime
from api.oauth.service import (
    MutualTls,
    RegistrationError,
    create_demo_accounts,
    create_user,
    register_client,
)
from api.settings import Settings
from vault.models import Organisation

REDIRECT = "https://app.example/callback"
PASSWORD = "a long enough password"
CHINESE = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")
SERVICE = Path(__file__).resolve().parents[1] / "api" / "oauth" / "service.py"

Attempt = Callable[[Session, Runtime], Any]


def _client(organisation: str | None, kind: str, scopes: list[str], **options: Any) -> Attempt:
    purposes = options.pop("purposes", [])
    redirects = options.pop("redirects", [REDIRECT] if kind == "public" else [])
    return lambda s, rt: register_client(
        s, rt.audit, organisation, kind, scopes, purposes, redirects, **options
    )


def _user(**fields: Any) -> Attempt:
    person = {"username": "someone", "password": PASSWORD, "role": "auditor", **fields}
    return lambda s, rt: create_user(s, rt.audit, **person)


CASES: dict[str, Attempt] = {
    "error.oauth.redirect-uri": _client(None, "public", ["me"], redirects=["http://x.example/"]),
    "error.oauth.purpose-code": _client(
        "org_dept", "confidential", ["residents:read"], purposes=["Not A Code"]
    ),
    "error.oauth.certificate-not-confidential": _client(
        None, "public", ["me"], mutual_tls=MutualTls(subject_dn="CN=App")
    ),
    "error.oauth.certificate-one-method": _client(
        "org_dept",
        "confidential",
        ["residents:read"],
        mutual_tls=MutualTls(subject_dn="CN=App", san="dns:app.example"),
    ),
    "error.oauth.subject-dn": _client(
        "org_dept", "confidential", ["residents:read"], mutual_tls=MutualTls(subject_dn="x")
    ),
    "error.oauth.san": _client(
        "org_dept", "confidential", ["residents:read"], mutual_tls=MutualTls(san="tel:110")
    ),
    "error.oauth.thumbprint": _client(
        "org_dept", "confidential", ["residents:read"], mutual_tls=MutualTls(self_signed=("x",))
    ),
    "error.oauth.unknown-scope": _client(None, "public", ["everything"]),
    "error.oauth.no-scope": _client(None, "public", []),
    "error.oauth.unknown-kind": _client(None, "secret", ["me"]),
    "error.oauth.no-organisation": _client("org_gone", "confidential", ["residents:read"]),
    "error.oauth.confidential-organisation": _client(None, "confidential", ["residents:read"]),
    "error.oauth.confidential-redirect": _client(
        "org_dept", "confidential", ["residents:read"], redirects=[REDIRECT]
    ),
    "error.oauth.public-redirect": _client(None, "public", ["me"], redirects=[]),
    "error.oauth.scopes-beyond": _client(None, "public", ["stats:read"]),
    "error.oauth.jurisdiction-community": _user(
        role="grid_worker", organisation_id="org_dept", jurisdiction={"grids": ["gd_1"]}
    ),
    "error.oauth.username": _user(username="Not Allowed"),
    "error.oauth.unknown-role": _user(role="mayor"),
    "error.oauth.password-short": _user(password="short"),
    "error.oauth.username-taken": _user(username="taken"),
    "error.oauth.resident-account": _user(role="resident"),
    "error.oauth.no-resident": _user(role="resident", resident_id="r_gone"),
    "error.oauth.worker-area": _user(role="grid_worker", organisation_id="org_dept"),
    "error.oauth.demo-exists": create_demo_accounts,
}


def _raised_ids() -> set[str]:
    """The message ids of every `RegistrationError(Message("…"))` in the service."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(SERVICE.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "RegistrationError":
            (message,) = node.args
            assert isinstance(message, ast.Call) and getattr(message.func, "id", None) == "Message"
            first = message.args[0]
            assert isinstance(first, ast.Constant) and isinstance(first.value, str)
            found.add(first.value)
    return found


def test_every_refusal_the_service_raises_has_a_case() -> None:
    assert _raised_ids() == set(CASES)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    home = tmp_path_factory.mktemp("registration")
    rt = init_runtime(Settings(home=home / "h", database_url=f"sqlite:///{home}/v.db"))
    with rt.transaction() as session:
        session.add(Organisation(id="org_dept", type="department", name_zh="民政", name_en="Dept"))
        session.flush()
        _client(None, "public", ["me"])(session, rt)  # a client: demo accounts are refused
        _user(username="taken")(session, rt)
    try:
        yield rt
    finally:
        rt.close()


@pytest.mark.parametrize("message_id", sorted(CASES))
def test_a_refusal_reads_whole_in_both_languages(runtime: Runtime, message_id: str) -> None:
    with runtime.transaction() as session, pytest.raises(RegistrationError) as raised:
        CASES[message_id](session, runtime)
    message = raised.value.message
    assert message.id == message_id
    zh, en = message.text("zh"), message.text("en")
    assert CHINESE.search(zh), zh
    assert not CHINESE.search(en), en
    assert message_id not in zh + en and "{" not in zh + en  # in the catalogue, filled in
    assert str(raised.value) == en  # what logs and tracebacks read
