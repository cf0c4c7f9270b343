"""The pages on any origin (issue 19, item 4): VAULT_PUBLIC_URL, the pages' client that
follows it at start, the newest pages' client taking over, sign-ins behind a proxy
coming back to the public origin, and `fields` showing an enum's allowed values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from access.runtime import Runtime, init_runtime
from api.http.app import create_app
from api.oauth.models import OAuthClient
from api.oauth.service import create_demo_accounts, register_client
from api.pages.clients import follow_origins, listen_origins, pages_clients
from api.settings import Settings
from audit.models import AuditEntry
from vault.config import SettingsInvalid
from vault.demo import populate

PUBLIC = "https://vault.example.gov.cn"
CALLBACKS = ("portal", "desk", "console", "operator")


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[tuple[Settings, Runtime, dict[str, Any]]]:
    """Demo data and accounts as `init --demo` leaves them: the pages' client for :8000."""
    settings = Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'vault.db'}")
    runtime = init_runtime(settings)
    try:
        with runtime.transaction() as session:
            populate(session, runtime.vault.store, 20)
        with runtime.transaction() as session:
            credentials = create_demo_accounts(session, runtime)
        yield settings, runtime, credentials
    finally:
        runtime.close()


def _uris(origin: str) -> list[str]:
    return [f"{origin}/{area}/callback" for area in CALLBACKS]


def _events(runtime: Runtime, action: str) -> list[AuditEntry]:
    with runtime.vault.sessions() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def _login_redirect(client: TestClient, area: str, **headers: str) -> dict[str, list[str]]:
    response = client.get(f"/{area}/login", headers=headers, follow_redirects=False)
    assert response.status_code in (302, 303, 307), response.text[:300]
    return parse_qs(urlsplit(response.headers["location"]).query)


# -- the setting -----------------------------------------------------------------------------


def test_public_url_is_one_or_more_origins_normalised() -> None:
    settings = Settings(public_url="HTTPS://Vault.Example.gov.cn:443/, http://localhost:8001")
    assert settings.public_origins == (PUBLIC, "http://localhost:8001")
    assert Settings(public_url=" ").public_origins == ()
    assert Settings().public_origins == ()


@pytest.mark.parametrize(
    "bad",
    [
        "vault.example.gov.cn",
        "ftp://vault.example.gov.cn",
        "https://vault.example.gov.cn/pages",
        "https://vault.example.gov.cn/?a=1",
        "https://vault.example.gov.cn/#top",
        "https://admin@vault.example.gov.cn",
        "http://vault.example.gov.cn",  # plain http off this machine
        f"{PUBLIC},http://10.0.0.5:8000",
    ],
)
def test_public_url_refuses_what_is_no_origin(bad: str) -> None:
    with pytest.raises(SettingsInvalid, match="VAULT_PUBLIC_URL"):
        Settings(public_url=bad)


def test_listen_origins_are_what_a_browser_here_uses() -> None:
    assert listen_origins("http", "127.0.0.1", 8765) == [
        "http://127.0.0.1:8765",
        "http://localhost:8765",
    ]
    assert listen_origins("http", "0.0.0.0", 9000) == [  # noqa: S104
        "http://127.0.0.1:9000",
        "http://localhost:9000",
    ]
    assert listen_origins("https", "vault.lan", 8443) == ["https://vault.lan:8443"]
    assert listen_origins("http", "vault.lan", 8000) == []  # Secure cookies would be lost
    assert listen_origins("http", "::1", 8000) == ["http://[::1]:8000"]


# -- following the configuration at start ------------------------------------------------


def test_the_demo_client_follows_the_origins_recorded_in_the_audit_log(
    vault: tuple[Settings, Runtime, dict[str, Any]],
) -> None:
    _, runtime, credentials = vault
    demo_client = credentials["public_clients"][0]["client_id"]
    with runtime.transaction() as session:
        done = follow_origins(session, runtime, [PUBLIC, "http://127.0.0.1:8765"])
    assert (done.client_id, done.updated, done.registered, done.revoked) == (
        demo_client,
        True,
        False,
        [],
    )
    assert done.missing_scopes == []
    with runtime.vault.sessions() as session:
        row = session.get(OAuthClient, demo_client)
        assert row is not None
        assert row.redirect_uris == [*_uris(PUBLIC), *_uris("http://127.0.0.1:8765")]
    (event,) = _events(runtime, "oauth.client_updated")
    assert event.client == demo_client
    assert event.details["redirect_uris"] == [*_uris(PUBLIC), *_uris("http://127.0.0.1:8765")]
    assert "http://127.0.0.1:8000/portal/callback" in event.details["previous_redirect_uris"]
    # The same configuration at the next start changes nothing and records nothing.
    with runtime.transaction() as session:
        again = follow_origins(session, runtime, [PUBLIC, "http://127.0.0.1:8765"])
    assert not again.updated
    assert len(_events(runtime, "oauth.client_updated")) == 1


def test_a_corrected_pages_client_takes_over_and_the_old_one_is_revoked_at_start(
    vault: tuple[Settings, Runtime, dict[str, Any]],
) -> None:
    """docs/deployment.md §9 used to register a pages' client without consents:read; the
    desk's sign-in then ended in invalid_scope, and a corrected second one did not help."""
    settings, runtime, _ = vault
    with runtime.transaction() as session:
        for row in pages_clients(session):  # only the one of §9 at first
            row.revoked_at = row.created_at
        lacking, _ = register_client(
            session,
            runtime.audit,
            None,
            "public",
            [
                "me",
                "residents:read",
                "residents:write",
                "consents:write",
                "audit:read",
                "admin:write",
            ],
            (),
            _uris(PUBLIC),
            first_party=True,
        )
    with runtime.transaction() as session:
        assert follow_origins(session, runtime, [PUBLIC]).missing_scopes == ["consents:read"]
    with runtime.transaction() as session:
        corrected, _ = register_client(
            session,
            runtime.audit,
            None,
            "public",
            [
                "me",
                "residents:read",
                "residents:write",
                "consents:read",
                "consents:write",
                "audit:read",
                "admin:write",
            ],
            (),
            _uris(PUBLIC),
            first_party=True,
        )
    app = create_app(settings.model_copy(update={"public_url": PUBLIC}), background=False)
    with TestClient(app, base_url=PUBLIC) as client:  # its lifespan closes its runtime
        # At once, without a restart: the newest registration is the one used.
        assert _login_redirect(client, "desk")["client_id"] == [corrected]
    with runtime.transaction() as session:
        done = follow_origins(session, runtime, [PUBLIC])
    assert (done.client_id, done.revoked, done.missing_scopes) == (corrected, [lacking], [])
    with runtime.vault.sessions() as session:
        assert [c.client_id for c in pages_clients(session)] == [corrected]
    assert any(e.client == lacking for e in _events(runtime, "oauth.client_revoked"))


def test_a_pages_client_is_registered_when_there_is_none(
    vault: tuple[Settings, Runtime, dict[str, Any]],
) -> None:
    _, runtime, _ = vault
    with runtime.transaction() as session:
        for row in pages_clients(session):
            row.revoked_at = row.created_at
    with runtime.transaction() as session:
        done = follow_origins(session, runtime, [PUBLIC])
    assert done.registered and done.redirect_uris == _uris(PUBLIC)
    assert done.missing_scopes == []


# -- behind the proxy ------------------------------------------------------------------------


@pytest.mark.parametrize("trusted", [False, True])
def test_behind_a_proxy_sign_ins_come_back_to_the_public_origin(
    vault: tuple[Settings, Runtime, dict[str, Any]], trusted: bool
) -> None:
    """nginx passes Host; whether its X-Forwarded-Proto is believed or not (it is only from
    VAULT_FORWARDED_ALLOW_IPS), the callback is the public origin's."""
    settings, runtime, _ = vault
    with runtime.transaction() as session:
        follow_origins(session, runtime, [PUBLIC])
    configured = settings.model_copy(
        update={"public_url": PUBLIC, "forwarded_allow_ips": "testclient" if trusted else None}
    )
    app = create_app(configured, background=False)
    # The vault listens on plain http behind the proxy; the browser is on https.
    with TestClient(app, base_url="http://vault.example.gov.cn") as client:
        for area in ("portal", "desk"):
            query = _login_redirect(client, area, **{"X-Forwarded-Proto": "https"})
            assert query["redirect_uri"] == [f"{PUBLIC}/{area}/callback"]
        # A Host the proxy rewrote (proxy_pass without Host) still comes back there.
        rewritten = _login_redirect(client, "portal", Host="127.0.0.1:8000")
        assert rewritten["redirect_uri"] == [f"{PUBLIC}/portal/callback"]


# -- the field catalogue -----------------------------------------------------------------------


def _cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", "from api.cli.main import main; main()", *args],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
        | {"VAULT_LANG": "en", "COLUMNS": "250"},
    )
    return done.stdout


def test_fields_shows_an_enums_allowed_values() -> None:
    records = {r["name"]: r for r in map(json.loads, _cli("fields", "--json").splitlines())}
    assert set(records["gender"]["values"]) == {"male", "female"}
    assert records["gender"]["values"]["male"] == {"zh": "男", "en": "Male"}
    assert "values" not in records["phone"]
    table = _cli("fields")
    assert "allowed values" in table and "male (Male)" in table
