"""The OAuth server over HTTP, as clients, browsers and resource servers use it.

Each test runs on SQLite and PostgreSQL (the `database_url` fixture), against a small app
with the OAuth router and protected routes, as `api.http.app` mounts them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from markupsafe import escape
from sqlalchemy import select, text, update

from access.runtime import Runtime, init_runtime
from api.oauth import ExternalIssuer, OAuthSettings, Principal, Scope, install_oauth, require_scopes
from api.oauth.keys import keyring_name, rotate_signing_key
from api.oauth.models import OAuthClient, TokenSigningKey
from api.oauth.scopes import ROLE_SCOPES
from api.oauth.server import VaultAuthorizationServer
from api.oauth.service import (
    RegistrationError,
    create_user,
    end_logins,
    register_client,
    revoke_client,
)
from api.settings import Settings
from audit.models import AuditEntry
from tests.demo_server import LentRuntime
from tests.factories import household, person, place
from vault.accounts import add_account, disable_account, reset_password
from vault.models import Organisation, OrganisationCommunity, utcnow
from vault.services import Provenance

BASE = "https://vault.example"
REDIRECT = "http://127.0.0.1:8000/portal/callback"
EXTERNAL_ISSUER = "https://sso.gov.example"
EXTERNAL_KEY = RSAKey.generate_key(2048, parameters={"kid": "sso-1"})


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text_: str) -> bytes:
    return base64.urlsafe_b64decode(text_ + "=" * (-len(text_) % 4))


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    return json.loads(_unb64url(header)), json.loads(_unb64url(payload))


@dataclass
class World:
    runtime: Runtime
    client: TestClient
    server: VaultAuthorizationServer
    dept_id: str
    dept_secret: str
    web_id: str
    resident_id: str
    passwords: dict[str, str]


def _settings() -> OAuthSettings:
    return OAuthSettings(
        issuer=BASE,
        external_issuers=[
            ExternalIssuer(
                name="gov-sso",
                issuer=EXTERNAL_ISSUER,
                jwks={"keys": [EXTERNAL_KEY.as_dict(private=False)]},
                role_claim="vault_role",
                role_map={"gridman": "grid_worker"},
                organisation_claim="org_id",
                allowed_scopes=[Scope.RESIDENTS_READ, Scope.RESIDENTS_WRITE],
            )
        ],
    )


def _app(runtime: Runtime, settings: OAuthSettings) -> FastAPI:
    app = FastAPI()
    install_oauth(app, runtime, settings)

    def body(p: Principal) -> dict[str, Any]:
        return {
            "subject": p.subject,
            "client_id": p.client_id,
            "username": p.username,
            "role": p.role,
            "organisation": p.organisation,
            "resident_id": p.resident_id,
            "scopes": sorted(p.scopes),
            "external": p.external,
        }

    @app.get("/v1/dummy")
    def dummy(p: Annotated[Principal, Depends(require_scopes(Scope.RESIDENTS_READ))]) -> Any:
        return body(p)

    @app.get("/v1/me")
    def me(p: Annotated[Principal, Depends(require_scopes(Scope.ME))]) -> Any:
        return body(p)

    return app


@pytest.fixture
def w(tmp_path: Path, database_url: str) -> Iterator[World]:
    runtime = init_runtime(Settings(home=tmp_path / "home", database_url=database_url))
    passwords = {"worker1": "correct horse battery", "resident1": "staple battery horse"}
    with runtime.transaction() as session:
        building = place(session)
        session.add_all(
            [
                Organisation(id="org_dept", type="department", name_zh="民政", name_en="Dept"),
                Organisation(id="org_rc", type="residents_committee", name_zh="居委", name_en="RC"),
            ]
        )
        session.flush()
        hh = household(session, building, "101")
        resident_id = runtime.vault.store.create(
            session, person(1), Provenance(actor="test", channel="cli"), household_id=hh.id
        )
        audit = runtime.audit
        dept_id, dept_secret = register_client(
            session,
            audit,
            "org_dept",
            "confidential",
            ["residents:read stats:read"],
            ["subsidy-review"],
        )
        web_id, _ = register_client(
            session,
            audit,
            None,
            "public",
            ["me residents:read residents:write audit:read"],
            [],
            [REDIRECT],
            first_party=True,
        )
        create_user(
            session,
            audit,
            username="worker1",
            password=passwords["worker1"],
            role="grid_worker",
            organisation_id="org_rc",
            jurisdiction={"community": "cm_1", "grids": ["gd_1"]},
        )
        create_user(
            session,
            audit,
            username="resident1",
            password=passwords["resident1"],
            role="resident",
            resident_id=resident_id,
        )
    assert dept_secret is not None
    app = _app(runtime, _settings())
    with TestClient(app, base_url=BASE) as client:
        yield World(
            runtime,
            client,
            app.state.oauth_server,
            dept_id,
            dept_secret,
            web_id,
            resident_id,
            passwords,
        )
    runtime.close()


# -- helpers ---------------------------------------------------------------------------------------


def _client_token(w: World, scope: str | None = None, secret: str | None = None) -> Any:
    data = {"grant_type": "client_credentials"}
    if scope:
        data["scope"] = scope
    return w.client.post("/oauth/token", data=data, auth=(w.dept_id, secret or w.dept_secret))


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = _b64url(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge


def _authorize_params(w: World, challenge: str, **extra: str) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": w.web_id,
        "redirect_uri": REDIRECT,
        "scope": "residents:read residents:write",
        "state": "st-1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(extra)
    return params


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def _login(w: World, username: str, password: str, challenge: str, **extra: str) -> Any:
    params = _authorize_params(w, challenge, **extra)
    form = w.client.get("/oauth/authorize", params=params)
    assert form.status_code == 200, form.text
    return w.client.post(
        "/oauth/authorize",
        params=params,
        data={"username": username, "password": password, "csrf_token": _csrf(form.text)},
        follow_redirects=False,
    )


def _code(response: Any) -> str:
    assert response.status_code == 303, response.text
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = parse_qs(location.query)
    assert query["state"] == ["st-1"]
    code: str = query["code"][0]
    return code


def _exchange(w: World, code: str, verifier: str) -> Any:
    return w.client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": w.web_id,
            "code_verifier": verifier,
        },
    )


def _person_tokens(w: World, username: str = "worker1", **extra: str) -> dict[str, Any]:
    verifier, challenge = _pkce()
    code = _code(_login(w, username, w.passwords[username], challenge, **extra))
    response = _exchange(w, code, verifier)
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def _refresh(w: World, refresh_token: str) -> Any:
    return w.client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": w.web_id},
    )


def _get(w: World, token: str, path: str = "/v1/dummy") -> Any:
    return w.client.get(path, headers={"Authorization": f"Bearer {token}"})


def _sign(w: World, **changes: Any) -> str:
    """A token signed by the server's own key, with chosen claims."""
    now = int(time.time())
    claims = {
        "iss": BASE,
        "sub": w.dept_id,
        "aud": f"{BASE}/v1",
        "client_id": w.dept_id,
        "scope": "residents:read",
        "iat": now,
        "exp": now + 300,
        "jti": secrets.token_hex(8),
        "org": "org_dept",
    }
    claims.update(changes)
    with w.runtime.transaction() as session:
        token: str = w.server.signer.sign(session, claims)
    return token


def _assert_invalid_token(response: Any, reason: str | None = None) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/problems/invalid-token")
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge
    if reason:
        assert response.json()["detail"] == reason


# -- client credentials ----------------------------------------------------------------------------


def test_client_credentials_give_an_rfc9068_jwt_signed_by_a_published_key(w: World) -> None:
    response = _client_token(w)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300
    assert body["scope"] == "residents:read stats:read" and "refresh_token" not in body
    header, claims = _parts(body["access_token"])
    # RFC 9864's fully-specified name, in the token and in the JWKS.
    assert header["typ"] == "at+jwt" and header["alg"] == "Ed25519"
    jwks = w.client.get("/oauth/jwks").json()
    keys = {k["kid"]: k for k in jwks["keys"]}
    assert header["kid"] in keys
    jwk = keys[header["kid"]]
    assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("OKP", "Ed25519", "Ed25519")
    # An outside verifier needs nothing but the JWKS: by hand, or with a JOSE library.
    signing_input, _, signature = body["access_token"].rpartition(".")
    public = Ed25519PublicKey.from_public_bytes(_unb64url(jwk["x"]))
    public.verify(_unb64url(signature), signing_input.encode())
    decoded = jwt.decode(body["access_token"], KeySet.import_key_set(jwks), algorithms=["Ed25519"])
    assert decoded.claims["client_id"] == w.dept_id
    assert claims["iss"] == BASE and claims["aud"] == f"{BASE}/v1"
    assert claims["sub"] == claims["client_id"] == w.dept_id
    assert claims["org"] == "org_dept" and claims["exp"] - claims["iat"] == 300
    assert {"jti", "scope"} <= set(claims) and "role" not in claims
    principal = _get(w, body["access_token"]).json()
    assert principal == {
        "subject": w.dept_id,
        "client_id": w.dept_id,
        "username": None,
        "role": None,
        "organisation": "org_dept",
        "resident_id": None,
        "scopes": ["residents:read", "stats:read"],
        "external": False,
    }
    narrower = _client_token(w, scope="stats:read").json()
    assert _parts(narrower["access_token"])[1]["scope"] == "stats:read"
    beyond = _client_token(w, scope="residents:write")
    assert beyond.status_code == 400 and beyond.json()["error"] == "invalid_scope"


def test_metadata_names_every_endpoint(w: World) -> None:
    meta = w.client.get("/.well-known/oauth-authorization-server").json()
    assert meta["issuer"] == BASE
    for name, path in (
        ("authorization_endpoint", "/oauth/authorize"),
        ("token_endpoint", "/oauth/token"),
        ("revocation_endpoint", "/oauth/revoke"),
        ("introspection_endpoint", "/oauth/introspect"),
        ("jwks_uri", "/oauth/jwks"),
    ):
        assert meta[name] == f"{BASE}{path}"
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert set(meta["scopes_supported"]) == {s.value for s in Scope}
    assert "none" not in meta["introspection_endpoint_auth_methods_supported"]


def test_a_wrong_secret_is_invalid_client(w: World) -> None:
    response = _client_token(w, secret="not-the-secret")
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic ")
    unknown = w.client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=("cl_nobody", "x")
    )
    assert unknown.status_code == 401 and unknown.json()["error"] == "invalid_client"
    # A public client cannot use client credentials at all.
    public = w.client.post(
        "/oauth/token", data={"grant_type": "client_credentials", "client_id": w.web_id}
    )
    assert public.status_code in (400, 401) and "access_token" not in public.json()


def test_plain_http_is_refused_except_on_loopback(w: World) -> None:
    data = {"grant_type": "client_credentials"}
    auth = (w.dept_id, w.dept_secret)
    plain = TestClient(w.client.app, base_url="http://vault.example")
    refused = plain.post("/oauth/token", data=data, auth=auth)
    assert refused.status_code == 400 and refused.json()["error"] == "insecure_transport"
    loopback = TestClient(w.client.app, base_url="http://127.0.0.1:8000")
    assert loopback.post("/oauth/token", data=data, auth=auth).status_code == 200


def test_token_requests_must_be_forms_without_repeated_parameters(w: World) -> None:
    as_json = w.client.post("/oauth/token", json={"grant_type": "client_credentials"})
    assert as_json.status_code == 400 and as_json.json()["error"] == "invalid_request"
    repeated = w.client.post(
        "/oauth/token",
        content="grant_type=client_credentials&scope=stats:read&scope=residents:read",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        auth=(w.dept_id, w.dept_secret),
    )
    assert repeated.status_code == 400 and repeated.json()["error"] == "invalid_request"


# -- people: the login form, PKCE, refresh ---------------------------------------------------------


def test_login_through_the_form_with_pkce_gives_access_and_refresh_tokens(w: World) -> None:
    verifier, challenge = _pkce()
    params = _authorize_params(w, challenge)
    form = w.client.get("/oauth/authorize", params=params)
    assert form.status_code == 200
    assert '<html lang="zh-CN">' in form.text and "用户名" in form.text and "密码" in form.text
    assert 'name="username"' in form.text and 'name="password"' in form.text
    assert 'autocomplete="current-password"' in form.text and '<label for="password">' in form.text
    assert "frame-ancestors 'none'" in form.headers["content-security-policy"]
    assert form.headers["cache-control"] == "no-store"
    english = w.client.get("/oauth/authorize", params={**params, "lang": "en"})
    assert '<html lang="en">' in english.text and "Username" in english.text
    assert ">中文</a>" in english.text and ">English</a>" in form.text
    # First-party: no approval step, the post redirects straight back with the code.
    assert 'decision" value="deny"' not in form.text
    response = w.client.post(
        "/oauth/authorize",
        params=params,
        data={
            "username": "worker1",
            "password": w.passwords["worker1"],
            "csrf_token": _csrf(form.text),
        },
        follow_redirects=False,
    )
    code = _code(response)
    tokens = _exchange(w, code, verifier).json()
    assert set(tokens) >= {"access_token", "refresh_token", "expires_in", "scope"}
    assert tokens["scope"] == "residents:read residents:write"
    header, claims = _parts(tokens["access_token"])
    assert header["typ"] == "at+jwt"
    assert claims["sub"] == "user:worker1" and claims["role"] == "grid_worker"
    assert claims["org"] == "org_rc" and claims["client_id"] == w.web_id and "sid" in claims
    principal = _get(w, tokens["access_token"]).json()
    assert principal["username"] == "worker1" and principal["role"] == "grid_worker"
    assert principal["organisation"] == "org_rc" and principal["resident_id"] is None


def test_a_person_gets_only_the_scopes_of_their_role(w: World) -> None:
    tokens = _person_tokens(w, "resident1", scope="me residents:read")
    assert tokens["scope"] == "me"
    principal = _get(w, tokens["access_token"], "/v1/me").json()
    assert principal["subject"] == "user:resident1" and principal["role"] == "resident"
    assert principal["resident_id"] == w.resident_id and principal["scopes"] == ["me"]
    # Nothing asked for is open to a resident: access_denied, back at the client.
    _, challenge = _pkce()
    denied = _login(w, "resident1", w.passwords["resident1"], challenge, scope="residents:read")
    assert denied.status_code == 303
    assert parse_qs(urlsplit(denied.headers["location"]).query)["error"] == ["access_denied"]


def test_another_partys_client_shows_what_it_asks_for_and_can_be_refused(w: World) -> None:
    with w.runtime.transaction() as session:
        app_id, secret = register_client(
            session,
            w.runtime.audit,
            None,
            "public",
            ["residents:read"],
            [],
            [REDIRECT],
            name="Volunteer app",
        )
    assert secret is None
    _, challenge = _pkce()
    params = _authorize_params(w, challenge, client_id=app_id, scope="residents:read")
    form = w.client.get("/oauth/authorize", params={**params, "lang": "en"})
    assert "Volunteer app" in form.text and str(escape(Scope.RESIDENTS_READ.en)) in form.text
    assert 'value="deny"' in form.text
    refused = w.client.post(
        "/oauth/authorize",
        params=params,
        data={"decision": "deny", "csrf_token": _csrf(form.text)},
        follow_redirects=False,
    )
    assert refused.status_code == 303
    query = parse_qs(urlsplit(refused.headers["location"]).query)
    assert query["error"] == ["access_denied"] and query["state"] == ["st-1"]


def test_plain_or_missing_pkce_is_refused(w: World) -> None:
    verifier = secrets.token_urlsafe(48)
    for extra in (
        {"code_challenge": verifier, "code_challenge_method": "plain"},
        {"code_challenge": _pkce()[1], "code_challenge_method": ""},
        {"code_challenge": "", "code_challenge_method": ""},
    ):
        params = {k: v for k, v in _authorize_params(w, "", **extra).items() if v}
        response = w.client.get("/oauth/authorize", params=params, follow_redirects=False)
        assert response.status_code == 302, extra
        query = parse_qs(urlsplit(response.headers["location"]).query)
        assert query["error"] == ["invalid_request"] and query["state"] == ["st-1"]


def test_a_bad_client_or_redirect_uri_gets_an_error_page_not_a_redirect(w: World) -> None:
    _, challenge = _pkce()
    # No such client: not found; a redirect URI the client did not register: forbidden.
    for extra, status in (
        ({"client_id": "cl_nobody"}, 404),
        ({"redirect_uri": "https://evil.example/cb"}, 403),
    ):
        response = w.client.get(
            "/oauth/authorize",
            params=_authorize_params(w, challenge, **extra),
            follow_redirects=False,
        )
        assert response.status_code == status and "location" not in response.headers
        assert 'role="alert"' in response.text


def test_a_wrong_verifier_or_a_reused_code_is_refused(w: World) -> None:
    verifier, challenge = _pkce()
    code = _code(_login(w, "worker1", w.passwords["worker1"], challenge))
    wrong = _exchange(w, code, _pkce()[0])
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    # A failed attempt spends the code as well.
    assert _exchange(w, code, verifier).json()["error"] == "invalid_grant"

    verifier, challenge = _pkce()
    code = _code(_login(w, "worker1", w.passwords["worker1"], challenge))
    first = _exchange(w, code, verifier)
    assert first.status_code == 200
    again = _exchange(w, code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    # Reuse revokes what the first exchange gave (RFC 6749 4.1.2).
    _assert_invalid_token(_get(w, first.json()["access_token"]), "revoked")
    assert _refresh(w, first.json()["refresh_token"]).json()["error"] == "invalid_grant"


def test_refresh_rotates_and_reuse_revokes_the_whole_family(w: World) -> None:
    tokens = _person_tokens(w)
    rotated = _refresh(w, tokens["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()
    assert second["refresh_token"] != tokens["refresh_token"]
    assert _parts(second["access_token"])[1]["sid"] == _parts(tokens["access_token"])[1]["sid"]
    assert _get(w, second["access_token"]).status_code == 200
    # The spent token comes back: theft is assumed, and the whole login ends.
    reused = _refresh(w, tokens["refresh_token"])
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    assert _refresh(w, second["refresh_token"]).json()["error"] == "invalid_grant"
    _assert_invalid_token(_get(w, second["access_token"]), "revoked")
    with w.runtime.vault.sessions() as session:
        events = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "oauth.refresh_reused")
        ).all()
    assert len(events) == 1 and events[0].outcome == "denied" and events[0].user == "worker1"


def test_refresh_can_narrow_but_not_widen_the_scope(w: World) -> None:
    tokens = _person_tokens(w)
    narrow = w.client.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": w.web_id,
            "scope": "residents:read",
        },
    )
    assert narrow.status_code == 200 and narrow.json()["scope"] == "residents:read"
    wide = w.client.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": narrow.json()["refresh_token"],
            "client_id": w.web_id,
            "scope": "residents:read audit:read",
        },
    )
    assert wide.status_code == 400 and wide.json()["error"] == "invalid_scope"


# -- revocation, introspection ---------------------------------------------------------------------


def test_revocation_takes_effect_on_the_next_request(w: World) -> None:
    token = _client_token(w).json()["access_token"]
    assert _get(w, token).status_code == 200
    response = w.client.post(
        "/oauth/revoke",
        data={"token": token, "token_type_hint": "access_token"},
        auth=(w.dept_id, w.dept_secret),
    )
    assert response.status_code == 200
    _assert_invalid_token(_get(w, token), "revoked")
    # Unknown tokens are "revoked" too (RFC 7009 2.2): no oracle.
    unknown = w.client.post(
        "/oauth/revoke", data={"token": "nonsense"}, auth=(w.dept_id, w.dept_secret)
    )
    assert unknown.status_code == 200
    # A person logs out: the public client revokes its refresh token, ending the login.
    tokens = _person_tokens(w)
    logout = w.client.post(
        "/oauth/revoke", data={"token": tokens["refresh_token"], "client_id": w.web_id}
    )
    assert logout.status_code == 200
    _assert_invalid_token(_get(w, tokens["access_token"]), "revoked")
    assert _refresh(w, tokens["refresh_token"]).json()["error"] == "invalid_grant"


def test_introspection_is_for_confidential_clients_and_reports_inactive_tokens(w: World) -> None:
    def introspect(token: str, auth: tuple[str, str] | None = None, **data: str) -> Any:
        return w.client.post(
            "/oauth/introspect",
            data={"token": token, **data},
            auth=auth or (w.dept_id, w.dept_secret),
        )

    with w.runtime.transaction() as session:
        # A resource server may ask about others' tokens (RFC 7662 section 4): `introspect`.
        server_id, server_secret = register_client(
            session, w.runtime.audit, "org_dept", "confidential", ["introspect"], []
        )
    assert server_secret is not None
    person = _person_tokens(w)
    active = introspect(person["access_token"], (server_id, server_secret)).json()
    assert active["active"] is True and active["username"] == "worker1"
    assert active["client_id"] == w.web_id and active["role"] == "grid_worker"
    assert active["scope"] == "residents:read residents:write" and active["iss"] == BASE
    # Public clients cannot introspect; a refresh token only by the client it was issued to.
    public = w.client.post(
        "/oauth/introspect", data={"token": person["access_token"], "client_id": w.web_id}
    )
    assert public.status_code == 401 and public.json()["error"] == "invalid_client"
    assert introspect(person["refresh_token"]).json() == {"active": False}
    assert introspect("garbage").json() == {"active": False}
    mine = _client_token(w).json()["access_token"]
    assert introspect(mine).json()["active"] is True
    w.client.post("/oauth/revoke", data={"token": mine}, auth=(w.dept_id, w.dept_secret))
    assert introspect(mine).json() == {"active": False}
    assert introspect(_sign(w, exp=int(time.time()) - 600)).json() == {"active": False}


# -- rejected tokens -------------------------------------------------------------------------------


def test_a_token_issued_as_eddsa_before_the_rename_still_verifies(w: World) -> None:
    """Tokens signed before RFC 9864's `Ed25519` name say `EdDSA`: the same signature, under
    the same key (whose row was made as "EdDSA"), accepted until it expires."""
    with w.runtime.transaction() as session:
        session.execute(update(TokenSigningKey).values(algorithm="EdDSA"))
    w.server.verifier.forget_keys()
    token = _client_token(w).json()["access_token"]
    header_part, payload, _ = token.split(".")
    header = {**json.loads(_unb64url(header_part)), "alg": "EdDSA"}
    signing_input = f"{_b64url(json.dumps(header).encode())}.{payload}"
    signature = w.runtime.vault.keyring.sign(keyring_name(header["kid"]), signing_input.encode())
    old = f"{signing_input}.{_b64url(signature)}"
    assert _get(w, old).json()["client_id"] == w.dept_id
    assert _get(w, token).status_code == 200  # and the new name, under the old key row
    # Any other name is refused, with the very same signature.
    for alg in ("HS256", "ES256", "none"):
        other = {**header, "alg": alg}
        forged_input = f"{_b64url(json.dumps(other).encode())}.{payload}"
        forged_sig = w.runtime.vault.keyring.sign(
            keyring_name(header["kid"]), forged_input.encode()
        )
        _assert_invalid_token(
            _get(w, f"{forged_input}.{_b64url(forged_sig)}"), "unsupported algorithm"
        )


def test_expired_tampered_and_foreign_tokens_are_refused(w: World) -> None:
    assert _get(w, _sign(w)).status_code == 200
    _assert_invalid_token(_get(w, _sign(w, exp=int(time.time()) - 120)), "expired")
    _assert_invalid_token(_get(w, _sign(w, aud="https://other.example/v1")), "wrong audience")

    header, payload, signature = _sign(w).split(".")
    claims = json.loads(_unb64url(payload))
    claims["scope"] = "residents:read residents:write stats:read"
    tampered = f"{header}.{_b64url(json.dumps(claims).encode())}.{signature}"
    _assert_invalid_token(_get(w, tampered), "bad signature")

    # Signed by someone else's key: under another issuer's name, or pretending to be ours.
    foreign = Ed25519PrivateKey.generate()
    kid = json.loads(_unb64url(header))["kid"]
    for iss, expected in ((BASE, "bad signature"), ("https://evil.example", "unknown issuer")):
        forged_header = _b64url(json.dumps({"alg": "EdDSA", "typ": "at+jwt", "kid": kid}).encode())
        forged_claims = {**claims, "iss": iss}
        signing_input = f"{forged_header}.{_b64url(json.dumps(forged_claims).encode())}"
        forged = f"{signing_input}.{_b64url(foreign.sign(signing_input.encode()))}"
        _assert_invalid_token(_get(w, forged), expected)

    _assert_invalid_token(_get(w, "not.a.jwt"), "malformed")
    missing = w.client.get("/v1/dummy")
    assert missing.status_code == 401 and "error=" not in missing.headers["www-authenticate"]
    basic = w.client.get("/v1/dummy", headers={"Authorization": "Basic abc"})
    _assert_invalid_token(basic)


def test_insufficient_scope_is_403_with_the_scope_needed(w: World) -> None:
    token = _client_token(w).json()["access_token"]
    response = _get(w, token, "/v1/me")
    assert response.status_code == 403
    assert response.json()["type"].endswith("/problems/insufficient-scope")
    challenge = response.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="me"' in challenge


def test_a_revoked_clients_tokens_fail_on_the_next_request(w: World) -> None:
    token = _client_token(w).json()["access_token"]
    assert _get(w, token).status_code == 200
    with w.runtime.transaction() as session:
        assert revoke_client(session, w.runtime.audit, w.dept_id, reason="contract ended")
    _assert_invalid_token(_get(w, token), "client revoked")
    again = _client_token(w)
    assert again.status_code == 401 and again.json()["error"] == "invalid_client"
    with w.runtime.vault.sessions() as session:
        actions = set(session.scalars(select(AuditEntry.action)))
    assert {"oauth.client_registered", "oauth.client_revoked", "oauth.user_created"} <= actions


def test_an_external_issuers_token_is_accepted_with_its_claims_mapped(w: World) -> None:
    now = int(time.time())
    claims = {
        "iss": EXTERNAL_ISSUER,
        "aud": f"{BASE}/v1",
        "sub": "sso-8841",
        "azp": "gov-portal",
        "preferred_username": "worker1",
        "vault_role": "gridman",
        "org_id": "org_rc",
        "scope": "openid residents:read audit:read",
        "iat": now,
        "exp": now + 300,
        "jti": "ext-jti-1",
    }
    token = jwt.encode({"alg": "RS256", "kid": "sso-1"}, claims, EXTERNAL_KEY)
    principal = _get(w, token).json()
    assert principal == {
        "subject": "ext:gov-sso:sso-8841",
        "client_id": "gov-portal",
        "username": "worker1",
        "role": "grid_worker",
        "organisation": "org_rc",
        "resident_id": None,
        "scopes": ["residents:read"],
        "external": True,
    }
    wrong_aud = jwt.encode({"alg": "RS256", "kid": "sso-1"}, {**claims, "aud": "x"}, EXTERNAL_KEY)
    _assert_invalid_token(_get(w, wrong_aud), "wrong audience")
    unknown_role = {**claims, "vault_role": "mayor"}
    _assert_invalid_token(
        _get(w, jwt.encode({"alg": "RS256", "kid": "sso-1"}, unknown_role, EXTERNAL_KEY)),
        "unknown role",
    )
    other_key = RSAKey.generate_key(2048, parameters={"kid": "sso-1"})
    _assert_invalid_token(
        _get(w, jwt.encode({"alg": "RS256", "kid": "sso-1"}, claims, other_key)), "bad signature"
    )


def test_an_external_jwks_is_fetched_once_and_again_for_a_new_kid(w: World) -> None:
    from api.oauth.tokens import TokenVerifier

    second = RSAKey.generate_key(2048, parameters={"kid": "sso-2"})
    published = [EXTERNAL_KEY.as_dict(private=False)]
    fetched: list[str] = []

    def fetch(url: str) -> dict[str, Any]:
        fetched.append(url)
        return {"keys": list(published)}

    settings = OAuthSettings(
        issuer=BASE,
        external_issuers=[
            ExternalIssuer(
                name="sso", issuer=EXTERNAL_ISSUER, jwks_url="https://sso.gov.example/jwks"
            )
        ],
    )
    clock = [time.time()]
    verifier = TokenVerifier(w.runtime.vault.sessions, settings, fetch_jwks=fetch)
    verifier.clock = lambda: clock[0]
    claims = {"iss": EXTERNAL_ISSUER, "aud": f"{BASE}/v1", "sub": "s", "exp": int(clock[0]) + 300}
    assert (
        verifier.verify(jwt.encode({"alg": "RS256", "kid": "sso-1"}, claims, EXTERNAL_KEY)).username
        is None
    )
    verifier.verify(jwt.encode({"alg": "RS256", "kid": "sso-1"}, claims, EXTERNAL_KEY))
    assert len(fetched) == 1
    published.append(second.as_dict(private=False))
    clock[0] += 60  # past the minimum gap between fetches
    verifier.verify(jwt.encode({"alg": "RS256", "kid": "sso-2"}, claims, second))
    assert len(fetched) == 2


def test_jwks_keeps_an_old_key_until_its_tokens_have_expired(w: World) -> None:
    old_token = _client_token(w).json()["access_token"]
    old_kid = _parts(old_token)[0]["kid"]
    with w.runtime.transaction() as session:
        new = rotate_signing_key(
            session, w.runtime.vault.keyring, max_token_lifetime=timedelta(seconds=300)
        )
    new_token = _client_token(w).json()["access_token"]
    assert _parts(new_token)[0]["kid"] == new.kid != old_kid
    kids = [k["kid"] for k in w.client.get("/oauth/jwks").json()["keys"]]
    assert kids == [new.kid, old_kid]
    assert _get(w, old_token).status_code == 200 and _get(w, new_token).status_code == 200
    # Once every token the old key signed has expired, it leaves the JWKS.
    with w.runtime.transaction() as session:
        session.execute(
            update(TokenSigningKey)
            .where(TokenSigningKey.kid == old_kid)
            .values(expires_after=utcnow() - timedelta(seconds=1))
        )
    assert [k["kid"] for k in w.client.get("/oauth/jwks").json()["keys"]] == [new.kid]
    w.client.app.state.token_verifier.forget_keys()  # type: ignore[attr-defined]
    _assert_invalid_token(_get(w, old_token), "unknown key")
    assert _get(w, new_token).status_code == 200


def test_a_token_verified_before_is_still_refused_once_it_expires(w: World) -> None:
    """The verifier keeps tokens it has checked, so the signature is not checked again on
    every request; expiry still is: the kept token is refused the moment it lapses."""
    token = _client_token(w).json()["access_token"]
    assert _get(w, token).status_code == 200
    verifier = w.client.app.state.token_verifier  # type: ignore[attr-defined]
    lifetime = _parts(token)[1]["exp"] - time.time()
    real_clock = verifier.clock
    verifier.clock = lambda: real_clock() + lifetime + 120
    try:
        _assert_invalid_token(_get(w, token), "expired")
    finally:
        verifier.clock = real_clock
    assert _get(w, token).status_code == 200


# -- the login form's defences ---------------------------------------------------------------------


def test_an_unknown_user_takes_about_as_long_as_a_known_one(w: World) -> None:
    _, challenge = _pkce()
    params = _authorize_params(w, challenge)

    def attempt(username: str) -> float:
        csrf = _csrf(w.client.get("/oauth/authorize", params=params).text)
        start = time.perf_counter()
        response = w.client.post(
            "/oauth/authorize",
            params=params,
            data={"username": username, "password": "wrong password!", "csrf_token": csrf},
        )
        elapsed = time.perf_counter() - start
        assert response.status_code == 400 and "用户名或密码不正确" in response.text
        return elapsed

    known: list[float] = []
    unknown: list[float] = []
    for n in range(5):  # interleaved, so both see the same load; the limit is 5 failures
        known.append(attempt("worker1"))
        unknown.append(attempt(f"nobody{n}"))
    ratio = statistics.median(unknown) / statistics.median(known)
    assert 1 / 3 < ratio < 3, (known, unknown)


def test_the_form_needs_its_csrf_token_and_limits_failed_logins(w: World) -> None:
    _, challenge = _pkce()
    params = _authorize_params(w, challenge)
    csrf = _csrf(w.client.get("/oauth/authorize", params=params).text)
    no_token = w.client.post(
        "/oauth/authorize", params=params, data={"username": "worker1", "password": "x"}
    )
    assert no_token.status_code == 403 and "页面已过期" in no_token.text
    # A token from another browser (no matching cookie) fails too.
    other = TestClient(w.client.app, base_url=BASE)
    stolen = other.post(
        "/oauth/authorize",
        params=params,
        data={"username": "worker1", "password": w.passwords["worker1"], "csrf_token": csrf},
        follow_redirects=False,
    )
    assert stolen.status_code == 403
    for _ in range(5):
        failed = w.client.post(
            "/oauth/authorize",
            params={**params, "lang": "en"},
            data={"username": "worker1", "password": "guess", "csrf_token": csrf},
        )
        assert failed.status_code == 400 and "Incorrect username or password." in failed.text
    blocked = w.client.post(
        "/oauth/authorize",
        params=params,
        data={"username": "worker1", "password": w.passwords["worker1"], "csrf_token": csrf},
        follow_redirects=False,
    )
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
    assert "尝试次数过多" in blocked.text


def test_pruning_keeps_what_can_still_be_used(w: World) -> None:
    from api.oauth.models import TokenFamily
    from api.oauth.service import prune_expired

    tokens = _person_tokens(w)
    with w.runtime.transaction() as session:
        assert prune_expired(session)["logins"] == 0
    assert _refresh(w, tokens["refresh_token"]).status_code == 200
    with w.runtime.transaction() as session:
        session.execute(update(TokenFamily).values(expires_at=utcnow() - timedelta(days=2)))
        counts = prune_expired(session)
    assert counts["logins"] == 1 and counts["refresh_tokens"] == 2


def test_secrets_are_stored_only_as_hashes(w: World) -> None:
    tokens = _person_tokens(w)
    with w.runtime.vault.sessions() as session:
        connection = session.connection()
        client = session.get(OAuthClient, w.dept_id)
        assert client is not None and client.secret_hash is not None
        assert client.secret_hash.startswith("$argon2id$")
        hashes = connection.execute(text("SELECT password_hash FROM oauth_users")).scalars().all()
        assert hashes and all(h.startswith("$argon2id$") for h in hashes)
        dump = " ".join(
            str(row)
            for table in (
                "oauth_clients",
                "oauth_users",
                "oauth_authorization_codes",
                "oauth_refresh_tokens",
                "oauth_token_families",
            )
            for row in connection.execute(text(f"SELECT * FROM {table}"))  # noqa: S608
        )
    for secret in (w.dept_secret, *w.passwords.values(), tokens["refresh_token"]):
        assert secret not in dump
    digest = hashlib.sha256(tokens["refresh_token"].encode()).hexdigest()
    assert digest in dump


# -- demo accounts and the command line ------------------------------------------------------------


def test_demo_accounts_follow_the_credentials_format(tmp_path: Path, database_url: str) -> None:
    from api.oauth.service import create_demo_accounts, write_demo_credentials
    from vault.demo import populate

    runtime = init_runtime(Settings(home=tmp_path / "home", database_url=database_url))
    try:
        with runtime.transaction() as session:
            populate(session, runtime.vault.store, 80)
        with runtime.transaction() as session:
            data = create_demo_accounts(session, runtime)
        path = tmp_path / "demo-credentials.json"
        write_demo_credentials(path, data)
        assert path.stat().st_mode & 0o777 == 0o600
        assert json.loads(path.read_text(encoding="utf-8")) == data
        clients = {c["organisation"]: c for c in data["clients"]}
        assert len(clients) == 8
        assert "residents:write" in clients["org_civil_affairs"]["scopes"]
        assert set(clients["org_anju_property"]["scopes"]) == {"residents:read", "consents:request"}
        assert clients["org_oc_xingfu"]["organisation_type"] == "owners_committee"
        web = data["public_clients"][0]
        assert "http://127.0.0.1:8000/desk/callback" in web["redirect_uris"]
        users = {u["role"]: u for u in reversed(data["users"])}
        assert set(users) == {"grid_worker", "community_worker", "auditor", "operator", "resident"}
        grid = next(u for u in data["users"] if u["username"] == "grid.xf1")
        assert (
            grid["jurisdiction"]["grids"] == ["gd_xf_1"] and grid["organisation"] == "org_rc_xingfu"
        )
        guardian = next(u for u in data["users"] if "children" in u)
        assert guardian["children"] and guardian["resident_id"]
        assert "organisation" not in users["auditor"] and "jurisdiction" not in guardian
        app = _app(runtime, OAuthSettings(issuer=BASE))
        with TestClient(app, base_url=BASE) as client:
            department = clients["org_health"]
            token = client.post(
                "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(department["client_id"], department["client_secret"]),
            )
            assert token.status_code == 200
    finally:
        runtime.close()


def test_clients_cli_adds_lists_and_revokes(w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from api.cli import clients as cli

    monkeypatch.setattr(cli, "runtime_factory", lambda: LentRuntime(w.runtime))
    monkeypatch.setenv("VAULT_LANG", "en")
    runner = CliRunner()
    added = runner.invoke(
        cli.clients_app,
        [
            "add",
            "--organisation",
            "org_dept",
            "--scopes",
            "residents:read",
            "--purposes",
            "subsidy-review",
        ],
    )
    assert added.exit_code == 0, added.output
    client_id = re.search(r"client_id: (\S+)", added.output).group(1)  # type: ignore[union-attr]
    assert re.search(r"client_secret: \S{40,}", added.output)
    listed = runner.invoke(cli.clients_app, ["list", "--json"])
    assert client_id in listed.output and "secret" not in listed.output
    revoked = runner.invoke(cli.clients_app, ["revoke", client_id])
    assert revoked.exit_code == 0 and f"revoked {client_id}" in revoked.output
    refused = runner.invoke(
        cli.clients_app, ["add", "--organisation", "org_dept", "--scopes", "audit:read"]
    )
    assert refused.exit_code == 1 and "cannot hold: audit:read" in refused.output
    rotated = runner.invoke(cli.token_keys_app, ["rotate"])
    assert rotated.exit_code == 0 and "new signing key:" in rotated.output
    keys = runner.invoke(cli.token_keys_app, ["list"])
    assert keys.exit_code == 0 and len(re.findall(r"\d{8}-[0-9a-f]{8}", keys.output)) == 2


# -- accounts made by an operator (issue 19) -------------------------------------------------------


def test_an_operators_account_logs_in_and_a_reset_or_disable_ends_its_tokens(w: World) -> None:
    with w.runtime.transaction() as session:
        session.add(OrganisationCommunity(organisation_id="org_rc", community_id="cm_1"))
        session.flush()
        added = add_account(
            session,
            "ops:li",
            username="grid.new",
            role="grid_worker",
            organisation_id="org_rc",
            grid_id="gd_1",
        )
    assert added.password is not None  # the one-time password, returned once
    assert (added.account.community, added.account.buildings) == ("cm_1", ("bd_1",))
    w.passwords["grid.new"] = added.password
    first = _person_tokens(w, "grid.new")
    assert _get(w, first["access_token"]).json()["role"] == "grid_worker"

    # A reset: the old password no longer opens the form, and the old login has ended.
    with w.runtime.transaction() as session:
        reset = reset_password(session, "ops:li", "grid.new")
        assert end_logins(session, "grid.new", "password_reset") == 1
    assert reset.password is not None and reset.password != added.password
    _assert_invalid_token(_get(w, first["access_token"]), "revoked")
    _, challenge = _pkce()
    assert _login(w, "grid.new", added.password, challenge).status_code == 400
    w.passwords["grid.new"] = reset.password
    second = _person_tokens(w, "grid.new")
    assert _get(w, second["access_token"]).status_code == 200

    # Disabled: the live access token fails on its next request, refresh and login fail too.
    with w.runtime.transaction() as session:
        disable_account(session, "ops:li", "grid.new")
    _assert_invalid_token(_get(w, second["access_token"]), "user disabled")
    refreshed = _refresh(w, second["refresh_token"])
    assert refreshed.status_code == 400 and "access_token" not in refreshed.json()
    _, challenge = _pkce()
    assert _login(w, "grid.new", reset.password, challenge).status_code == 400


def test_admin_write_is_an_operators_alone(w: World) -> None:
    """No organisation's system may hold admin:write; a person holds it only as an operator."""
    with w.runtime.transaction() as session, pytest.raises(RegistrationError) as refused:
        register_client(session, w.runtime.audit, "org_rc", "confidential", ["admin:write"], [])
    assert refused.value.message.id == "error.oauth.scopes-beyond"
    holders = {role for role, scopes in ROLE_SCOPES.items() if Scope.ADMIN_WRITE in scopes}
    assert holders == {"operator"}
    assert ROLE_SCOPES["operator"] == {Scope.ADMIN_WRITE}  # and nothing that reads residents
