"""Mutual TLS for departments (RFC 8705), end to end over real sockets.

Two ways a client certificate reaches the vault, each with its own server:
* `mtls_server`: the vault terminates TLS itself and asks for client certificates
  (`VAULT_TLS_CLIENT_AUTH=optional`), as `resident-vault serve` does; on the embedded
  defaults and on the production profile (PostgreSQL, OPA sidecar);
* `proxy_server`: plain HTTP behind a reverse proxy on 127.0.0.1 that forwards the
  certificate it verified in `X-Client-Cert` (deploy/nginx/resident-vault.conf); any
  other 127/8 address plays a host that reaches the vault's port directly.

Clients are registered the way docs/transport-security.md tells operators to, with
`resident-vault clients add`. Thumbprints are computed by the test (tests/tls_support.py),
not by the code under test.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from api.cli import clients as cli
from audit.models import AuditEntry
from tests.demo_server import LentRuntime
from tests.tls_support import Identity, Pki, TlsServer, make_pki, run_tls_server, tls_server_on

MTLS_BASE_URL = "https://mtls.vault.example"
CERT_HEADER = "X-Client-Cert"
PROXY = "127.0.0.1"
ELSEWHERE = "127.0.0.2"
PURPOSE = "subsidy-review"
SCOPE = "residents:read"


# -- servers and their clients -----------------------------------------------------------------


def clients_add(server: TlsServer, *options: str) -> dict[str, str]:
    """`resident-vault clients add ...` against the server's database; what it printed."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "runtime_factory", lambda: LentRuntime(server.runtime))
        patch.setenv("VAULT_LANG", "en")
        done = CliRunner().invoke(cli.clients_app, ["add", *options])
    assert done.exit_code == 0, done.output
    return dict(re.findall(r"^([a-z_]+): (\S+)$", done.output, re.MULTILINE))


def register_department_clients(server: TlsServer, pki: Pki) -> None:
    """The certificate clients every test below uses, kept in `server.extra`."""
    civil = server.client("org_civil_affairs")
    department = [
        "--organisation",
        "org_civil_affairs",
        "--scopes",
        SCOPE,
        "--purposes",
        " ".join(civil["purposes"]),
    ]
    # The DN as an operator might type it: spaces and lower-case names do not matter.
    typed_dn = ", ".join(
        f"{part.split('=', 1)[0].lower()}={part.split('=', 1)[1]}"
        for part in pki.civil.subject_dn.split(",")
    )
    registered = {
        "by_dn": clients_add(server, *department, "--tls-client-auth", typed_dn, "--cert-bound"),
        "by_san": clients_add(
            server, *department, "--tls-client-auth-san", "dns:civil.dept.example"
        ),
        "self_signed": clients_add(
            server, *department, "--self-signed-cert", str(pki.self_signed.cert), "--cert-bound"
        ),
        "secret_bound": clients_add(server, *department, "--cert-bound"),
    }
    assert registered["by_dn"]["token_endpoint_auth_method"] == "tls_client_auth"
    assert registered["self_signed"]["token_endpoint_auth_method"] == "self_signed_tls_client_auth"
    assert "client_secret" not in registered["by_dn"]  # a certificate client has no secret
    assert "client_secret" in registered["secret_bound"]
    server.extra.update(registered)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("mtls-pki"))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def mtls_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_template: str | None,
    pki: Pki,
) -> Iterator[TlsServer]:
    """TLS here, client certificates asked for, and a separate mTLS host advertised."""
    home = tmp_path_factory.mktemp("mtls-server")
    with contextlib.ExitStack() as stack:
        with pytest.MonkeyPatch.context() as patch:
            # Read once, when the app is made (api.oauth.routes.install_oauth).
            patch.setenv("VAULT_OAUTH_MTLS_BASE_URL", MTLS_BASE_URL)
            server = stack.enter_context(
                tls_server_on(
                    request.param,
                    home,
                    postgres_template,
                    pki=pki,
                    residents=10,
                    tls_cert_file=pki.server.cert,
                    tls_key_file=pki.server.key,
                    tls_client_ca_file=pki.client_ca_bundle,
                    tls_client_auth="optional",
                )
            )
        register_department_clients(server, pki)
        yield server


@pytest.fixture(scope="module")
def proxy_server(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[TlsServer]:
    """Plain HTTP behind a trusted proxy that forwards client certificates in a header."""
    home = tmp_path_factory.mktemp("mtls-proxy")
    with run_tls_server(
        home / "home",
        f"sqlite:///{home / 'vault.db'}",
        pki=pki,
        residents=10,
        forwarded_allow_ips=PROXY,
        client_cert_header=CERT_HEADER,
    ) as server:
        register_department_clients(server, pki)
        yield server


# -- helpers ----------------------------------------------------------------------------------


def request_token(http: httpx.Client, client_id: str, **kwargs: Any) -> httpx.Response:
    """client_credentials for a certificate client: its id in the body, no secret."""
    data = {"grant_type": "client_credentials", "client_id": client_id, "scope": SCOPE}
    return http.post("/oauth/token", data=data, **kwargs)


def claims_of(token: str) -> dict[str, Any]:
    """A JWT's payload, unverified: what the client would see in it."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(f"{payload}{'=' * (-len(payload) % 4)}")
    )
    return claims


def read_resident(
    server: TlsServer, http: httpx.Client, token: str, **kwargs: Any
) -> httpx.Response:
    pseudonym = server.resident_for("org_civil_affairs")
    headers = {"Authorization": f"Bearer {token}", "Purpose": PURPOSE, **kwargs.pop("headers", {})}
    return http.get(f"/v1/residents/{pseudonym}", headers=headers, **kwargs)


def assert_bound_token_refused(response: httpx.Response, reason: str) -> None:
    """RFC 8705 section 3 at the resource server: 401 and `invalid_token`, as a problem."""
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["type"].endswith("/problems/invalid-token")
    assert problem["status"] == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="resident-vault"')
    assert 'error="invalid_token"' in challenge
    assert reason in challenge
    assert "fields" not in problem


def assert_invalid_client(response: httpx.Response) -> None:
    assert response.status_code in (400, 401), response.text
    assert response.json()["error"] == "invalid_client"
    assert "access_token" not in response.json()


def bound_token(server: TlsServer, identity: Identity, client: str = "by_dn") -> str:
    with server.http(identity) as http:
        response = request_token(http, server.extra[client]["client_id"])
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def via(address: str, server: TlsServer) -> httpx.Client:
    """A client of `server` whose connections come from `address` (127/8 is all local)."""
    return httpx.Client(
        base_url=server.url,
        transport=httpx.HTTPTransport(local_address=address),
        timeout=60,
    )


def forwarded(identity: Identity | None, **headers: str) -> dict[str, str]:
    """Headers as the proxy sends them: the scheme, and the certificate if there was one."""
    sent = {"X-Forwarded-Proto": "https", **headers}
    if identity is not None:
        sent[CERT_HEADER] = identity.forwarded
    return sent


# -- the vault terminating TLS ------------------------------------------------------------------


def test_a_certificate_client_gets_a_token_bound_to_its_certificate_and_reads(
    mtls_server: TlsServer, pki: Pki
) -> None:
    client_id = mtls_server.extra["by_dn"]["client_id"]
    with mtls_server.http(pki.civil) as http:
        issued = request_token(http, client_id)
        assert issued.status_code == 200, issued.text
        assert issued.headers["cache-control"] == "no-store"
        token = issued.json()["access_token"]
        claims = claims_of(token)
        assert claims["client_id"] == client_id
        assert claims["org"] == "org_civil_affairs"
        assert claims["cnf"] == {"x5t#S256": pki.civil.x5t_s256}
        record = read_resident(mtls_server, http, token)
    assert record.status_code == 200, record.text
    assert record.json()["fields"]  # data came back
    with mtls_server.runtime.vault.sessions() as session:
        entries = list(
            session.scalars(
                select(AuditEntry).where(AuditEntry.decision_id == record.headers["Decision-Id"])
            )
        )
    reads = [e for e in entries if e.kind == "access"]
    assert reads, "the read has no audit entry"
    assert {(e.client, e.outcome, e.purpose) for e in reads} == {(client_id, "allowed", PURPOSE)}


def test_a_bound_token_is_refused_with_another_certificate_or_none(
    mtls_server: TlsServer, pki: Pki
) -> None:
    token = bound_token(mtls_server, pki.civil)
    # A certificate the vault trusts, from the same CA, is still not the one it is bound to.
    with mtls_server.http(pki.health) as other:
        assert_bound_token_refused(
            read_resident(mtls_server, other, token), "with another certificate"
        )
    with mtls_server.http() as none:
        assert_bound_token_refused(
            read_resident(mtls_server, none, token), "without its certificate"
        )
    with mtls_server.http(pki.civil) as own:  # and the rightful holder still can
        assert read_resident(mtls_server, own, token).status_code == 200


def test_only_the_registered_subject_authenticates_as_the_client(
    mtls_server: TlsServer, pki: Pki
) -> None:
    by_dn = mtls_server.extra["by_dn"]["client_id"]
    by_san = mtls_server.extra["by_san"]["client_id"]
    with mtls_server.http(pki.health) as health:  # valid certificate, another subject
        assert_invalid_client(request_token(health, by_dn))
        assert_invalid_client(request_token(health, by_san))  # and no SAN of that name
    with mtls_server.http() as anonymous:
        assert_invalid_client(request_token(anonymous, by_dn))
    # The same subject DN from a CA we do not trust never gets past the handshake.
    with pytest.raises(httpx.TransportError), mtls_server.http(pki.stranger) as impostor:
        request_token(impostor, by_dn)
    # A secret client cannot switch to its certificate, and a certificate client has no
    # secret to fall back on.
    secret_client = mtls_server.client("org_civil_affairs")
    with mtls_server.http(pki.civil) as civil:
        assert_invalid_client(request_token(civil, secret_client["client_id"]))
        wrong_way = civil.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "scope": SCOPE},
            auth=(by_dn, secret_client["client_secret"]),
        )
        assert_invalid_client(wrong_way)
        by_name = request_token(civil, by_san)  # the SAN client: not bound
    assert by_name.status_code == 200, by_name.text
    assert "cnf" not in claims_of(by_name.json()["access_token"])


def test_a_self_signed_client_authenticates_with_its_registered_certificate_only(
    mtls_server: TlsServer, pki: Pki
) -> None:
    client_id = mtls_server.extra["self_signed"]["client_id"]
    with mtls_server.http(pki.self_signed) as own:
        issued = request_token(own, client_id)
        assert issued.status_code == 200, issued.text
        token = issued.json()["access_token"]
        assert claims_of(token)["cnf"] == {"x5t#S256": pki.self_signed.x5t_s256}
        assert read_resident(mtls_server, own, token).status_code == 200
    # Same subject, also accepted by the handshake (it is in the client-CA bundle), but
    # not the certificate registered: its thumbprint differs.
    with mtls_server.http(pki.other_self_signed) as lookalike:
        assert_invalid_client(request_token(lookalike, client_id))
        assert_bound_token_refused(
            read_resident(mtls_server, lookalike, token), "with another certificate"
        )
    with mtls_server.http(pki.civil) as civil:  # a CA-issued certificate is not it either
        assert_invalid_client(request_token(civil, client_id))


def test_a_secret_client_registered_cert_bound_needs_a_certificate_for_its_tokens(
    mtls_server: TlsServer, pki: Pki
) -> None:
    client = mtls_server.extra["secret_bound"]
    data = {"grant_type": "client_credentials", "scope": SCOPE}
    auth = (client["client_id"], client["client_secret"])
    with mtls_server.http() as without:
        refused = without.post("/oauth/token", data=data, auth=auth)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "invalid_request"
    assert "access_token" not in refused.json()
    with mtls_server.http(pki.health) as with_cert:
        issued = with_cert.post("/oauth/token", data=data, auth=auth)
        assert issued.status_code == 200, issued.text
        token = issued.json()["access_token"]
        assert claims_of(token)["cnf"] == {"x5t#S256": pki.health.x5t_s256}
        assert read_resident(mtls_server, with_cert, token).status_code == 200
    with mtls_server.http(pki.civil) as other:  # the secret alone is no longer enough
        assert_bound_token_refused(
            read_resident(mtls_server, other, token), "with another certificate"
        )


def test_introspection_shows_the_binding(mtls_server: TlsServer, pki: Pki) -> None:
    token = bound_token(mtls_server, pki.civil)
    client_id = mtls_server.extra["by_dn"]["client_id"]
    with mtls_server.http(pki.civil) as civil:
        # The client authenticates to introspection with its certificate too.
        answer = civil.post("/oauth/introspect", data={"token": token, "client_id": client_id})
        unbound = bound_token(mtls_server, pki.civil, "by_san")
        # Asked by the client it was issued to: one client may not look into another's.
        by_san = mtls_server.extra["by_san"]["client_id"]
        plain = civil.post("/oauth/introspect", data={"token": unbound, "client_id": by_san})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["active"] is True
    assert body["client_id"] == client_id
    assert body["cnf"] == {"x5t#S256": pki.civil.x5t_s256}
    assert plain.json()["active"] is True and "cnf" not in plain.json()
    with mtls_server.http(pki.health) as stranger:  # no client authentication: refused
        refused = stranger.post("/oauth/introspect", data={"token": token, "client_id": client_id})
    assert_invalid_client(refused)


def test_the_client_revokes_its_bound_token_with_its_certificate(
    mtls_server: TlsServer, pki: Pki
) -> None:
    token = bound_token(mtls_server, pki.civil)
    client_id = mtls_server.extra["by_dn"]["client_id"]
    with mtls_server.http(pki.civil) as civil:
        assert read_resident(mtls_server, civil, token).status_code == 200
        revoked = civil.post("/oauth/revoke", data={"token": token, "client_id": client_id})
        assert revoked.status_code == 200, revoked.text
        assert_bound_token_refused(read_resident(mtls_server, civil, token), "revoked")


def test_metadata_advertises_bound_tokens_and_the_mtls_endpoints(
    mtls_server: TlsServer, proxy_server: TlsServer
) -> None:
    with mtls_server.http() as http:
        metadata = http.get("/.well-known/oauth-authorization-server").json()
    assert metadata["tls_client_certificate_bound_access_tokens"] is True
    assert {"tls_client_auth", "self_signed_tls_client_auth"} <= set(
        metadata["token_endpoint_auth_methods_supported"]
    )
    assert {"tls_client_auth", "self_signed_tls_client_auth"} <= set(
        metadata["introspection_endpoint_auth_methods_supported"]
    )
    assert metadata["mtls_endpoint_aliases"] == {
        "token_endpoint": f"{MTLS_BASE_URL}/oauth/token",
        "revocation_endpoint": f"{MTLS_BASE_URL}/oauth/revoke",
        "introspection_endpoint": f"{MTLS_BASE_URL}/oauth/introspect",
    }
    assert metadata["token_endpoint"].startswith("https://")  # the issuer's, not the alias
    assert not metadata["token_endpoint"].startswith(MTLS_BASE_URL)
    # Behind a proxy that forwards certificates, with no separate host configured, the
    # aliases are the issuer's own endpoints.
    proxied = httpx.get(f"{proxy_server.url}/.well-known/oauth-authorization-server").json()
    assert proxied["tls_client_certificate_bound_access_tokens"] is True
    assert proxied["mtls_endpoint_aliases"]["token_endpoint"] == proxied["token_endpoint"]


# -- behind a reverse proxy -----------------------------------------------------------------------


def test_a_certificate_forwarded_by_the_trusted_proxy_authenticates_and_binds(
    proxy_server: TlsServer, pki: Pki
) -> None:
    client_id = proxy_server.extra["by_dn"]["client_id"]
    with via(PROXY, proxy_server) as proxy:
        issued = request_token(proxy, client_id, headers=forwarded(pki.civil))
        assert issued.status_code == 200, issued.text
        token = issued.json()["access_token"]
        assert claims_of(token)["cnf"] == {"x5t#S256": pki.civil.x5t_s256}
        record = read_resident(proxy_server, proxy, token, headers=forwarded(pki.civil))
        assert record.status_code == 200, record.text
        assert record.headers["strict-transport-security"].startswith("max-age=")
        other = read_resident(proxy_server, proxy, token, headers=forwarded(pki.health))
        assert_bound_token_refused(other, "with another certificate")
        # The proxy saw no certificate (it sends no header): nothing to bind to.
        bare = read_resident(proxy_server, proxy, token, headers=forwarded(None))
        assert_bound_token_refused(bare, "without its certificate")
        assert_invalid_client(request_token(proxy, client_id, headers=forwarded(pki.health)))


def test_a_certificate_header_from_anyone_else_is_ignored(
    proxy_server: TlsServer, pki: Pki
) -> None:
    client_id = proxy_server.extra["by_dn"]["client_id"]
    with via(PROXY, proxy_server) as proxy:
        token = request_token(proxy, client_id, headers=forwarded(pki.civil)).json()["access_token"]
    with via(ELSEWHERE, proxy_server) as spoofer:
        # A host that reaches the port directly cannot claim a certificate it only copied:
        # no client authentication with it...
        assert_invalid_client(request_token(spoofer, client_id, headers=forwarded(pki.civil)))
        # ...no token bound to it for a secret client (refused, not issued unbound)...
        secret_bound = proxy_server.extra["secret_bound"]
        unbound = spoofer.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "scope": SCOPE},
            auth=(secret_bound["client_id"], secret_bound["client_secret"]),
            headers=forwarded(pki.civil),
        )
        assert unbound.status_code == 400 and unbound.json()["error"] == "invalid_request"
        # ...and a stolen bound token is not satisfied by the header.
        stolen = read_resident(proxy_server, spoofer, token, headers=forwarded(pki.civil))
        assert_bound_token_refused(stolen, "without its certificate")
        assert "strict-transport-security" not in stolen.headers  # nor its X-Forwarded-Proto
