"""TLS for the API, over real sockets: what a client sees when it connects.

The service runs under uvicorn with the options `resident-vault serve` gives it
(`api.http.tls.uvicorn_options`), on certificates made for the test (tests/tls_support.py).
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from api.http.tls import TransportConfigError, uvicorn_options
from api.pages.core import CSP as PAGES_CSP
from api.settings import Settings
from tests.tls_support import Pki, TlsServer, make_pki, run_tls_server

HSTS = "max-age=31536000; includeSubDomains"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("tls-pki"))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[TlsServer]:
    home = tmp_path_factory.mktemp("tls-server")
    with run_tls_server(
        home / "home",
        f"sqlite:///{home / 'vault.db'}",
        pki=pki,
        tls_cert_file=pki.server.cert,
        tls_key_file=pki.server.key,
    ) as server:
        yield server


@pytest.fixture(scope="module")
def required_server(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[TlsServer]:
    home = tmp_path_factory.mktemp("tls-required")
    with run_tls_server(
        home / "home",
        f"sqlite:///{home / 'vault.db'}",
        pki=pki,
        residents=5,
        tls_cert_file=pki.server.cert,
        tls_key_file=pki.server.key,
        tls_client_ca_file=pki.client_ca_bundle,
        tls_client_auth="required",
    ) as server:
        yield server


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    """Plain HTTP behind a (simulated) reverse proxy on 127.0.0.1."""
    home = tmp_path_factory.mktemp("tls-plain")
    with run_tls_server(
        home / "home",
        f"sqlite:///{home / 'vault.db'}",
        pki=None,
        residents=5,
        forwarded_allow_ips="127.0.0.1",
    ) as server:
        yield server


def _from(address: str) -> httpx.HTTPTransport:
    """A transport whose connections come from `address` (any 127/8 address is local)."""
    return httpx.HTTPTransport(local_address=address)


def _handshake(port: int, context: ssl.SSLContext) -> str | None:
    """The protocol version a raw TLS handshake agrees on."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return tls.version()


def _port(server: TlsServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


# -- the handshake ------------------------------------------------------------------------------


def test_https_negotiates_tls_1_3_and_1_2_with_a_verified_certificate(
    tls_server: TlsServer, pki: Pki
) -> None:
    assert tls_server.url.startswith("https://")
    assert _handshake(_port(tls_server), pki.client_context()) == "TLSv1.3"
    tls12 = pki.client_context()
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    assert _handshake(_port(tls_server), tls12) == "TLSv1.2"
    # A client that does not trust our CA refuses the server (the certificate is real).
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{tls_server.url}/healthz", verify=ssl.create_default_context())


def test_old_protocols_and_weak_ciphers_are_refused(tls_server: TlsServer, pki: Pki) -> None:
    # A client that can speak TLS 1.0/1.1 (it completes such a handshake with
    # `openssl s_server -tls1_1`); ours must not.
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # deprecated on purpose
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError):
        _handshake(_port(tls_server), old)
    cbc = pki.client_context()
    cbc.maximum_version = ssl.TLSVersion.TLSv1_2
    cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384")  # no AEAD
    with pytest.raises(ssl.SSLError):
        _handshake(_port(tls_server), cbc)


def test_required_client_auth_refuses_a_client_without_a_certificate(
    required_server: TlsServer, pki: Pki
) -> None:
    with pytest.raises(httpx.TransportError), required_server.http() as anonymous:
        anonymous.get("/healthz")
    with pytest.raises(httpx.TransportError), required_server.http(pki.stranger) as stranger:
        stranger.get("/healthz")  # a certificate from a CA we do not trust
    with required_server.http(pki.civil) as department:
        assert department.get("/healthz").status_code == 200


# -- headers ------------------------------------------------------------------------------------


def test_api_responses_over_https_carry_hsts_and_secure_headers(
    tls_server: TlsServer, pki: Pki
) -> None:
    with tls_server.http() as client:
        response = client.get("/v1/fields")
    assert response.status_code == 200
    headers = response.headers
    assert headers["strict-transport-security"] == HSTS
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "server" not in headers  # no version banner


def test_token_and_resident_responses_are_never_stored(tls_server: TlsServer) -> None:
    client = tls_server.client("org_civil_affairs")
    with tls_server.http() as http:
        token = http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "scope": "residents:read"},
            auth=(client["client_id"], client["client_secret"]),
        )
        assert token.status_code == 200, token.text
        assert token.headers["cache-control"] == "no-store"
        pseudonym = tls_server.resident_for("org_civil_affairs")
        record = http.get(
            f"/v1/residents/{pseudonym}",
            headers={
                "Authorization": f"Bearer {token.json()['access_token']}",
                "Purpose": "subsidy-review",
            },
        )
    assert record.status_code == 200, record.text
    assert record.headers["cache-control"] == "no-store"
    assert record.headers["strict-transport-security"] == HSTS


def test_pages_keep_their_own_policy_and_get_hsts(tls_server: TlsServer) -> None:
    with tls_server.http() as client:
        page = client.get("/portal/")
    assert page.status_code == 200, page.text[:300]
    assert page.headers["referrer-policy"] == "same-origin"  # their forms' Origin check
    assert page.headers.get_list("content-security-policy") == [PAGES_CSP]
    assert page.headers["strict-transport-security"] == HSTS


def test_issuer_follows_the_https_scheme(tls_server: TlsServer) -> None:
    with tls_server.http() as client:
        metadata = client.get("/.well-known/oauth-authorization-server").json()
    assert metadata["issuer"].startswith("https://")
    assert metadata["token_endpoint"].startswith("https://")
    # No client certificates are asked for here, so RFC 8705 is not advertised.
    assert "mtls_endpoint_aliases" not in metadata
    assert "tls_client_auth" not in metadata["token_endpoint_auth_methods_supported"]


def test_hsts_only_over_https_and_x_forwarded_proto_only_from_the_proxy(
    plain_server: TlsServer,
) -> None:
    forwarded = {"X-Forwarded-Proto": "https"}
    direct = httpx.get(f"{plain_server.url}/v1/fields", timeout=30)
    assert direct.status_code == 200
    assert "strict-transport-security" not in direct.headers
    assert direct.headers["x-content-type-options"] == "nosniff"
    with httpx.Client(transport=_from("127.0.0.1"), timeout=30) as proxy:
        via_proxy = proxy.get(f"{plain_server.url}/v1/fields", headers=forwarded)
    assert via_proxy.headers["strict-transport-security"] == HSTS
    with httpx.Client(transport=_from("127.0.0.2"), timeout=30) as someone:
        spoofed = someone.get(f"{plain_server.url}/v1/fields", headers=forwarded)
    assert spoofed.status_code == 200
    assert "strict-transport-security" not in spoofed.headers


# -- start-up checks ----------------------------------------------------------------------------


def _settings(tmp_path: Path, **values: Any) -> Settings:
    return Settings(home=tmp_path, **values)


def _mismatched_key(tmp_path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "other.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _encrypted_key(tmp_path: Path, pki: Pki) -> Path:
    key = serialization.load_pem_private_key(pki.server.key.read_bytes(), password=None)
    path = tmp_path / "encrypted.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"a passphrase"),
        )
    )
    return path


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing_cert", "certificate file not found"),
        ("missing_key", "private key file not found"),
        ("not_a_certificate", "holds no PEM certificate"),
        ("mismatched_key", "does not match the certificate"),
        ("encrypted_key", "is encrypted"),
        ("ca_without_client_auth", "VAULT_TLS_CLIENT_AUTH is none"),
    ],
)
def test_bad_tls_files_stop_start_up_with_the_reason(
    tmp_path: Path, pki: Pki, case: str, expected: str
) -> None:
    # Settings that contradict each other (a certificate without its key, client auth
    # without a CA) are refused earlier, by Settings itself; these need the files.
    good = {"tls_cert_file": pki.server.cert, "tls_key_file": pki.server.key}
    values: dict[str, Any] = {
        "missing_cert": {**good, "tls_cert_file": tmp_path / "absent.crt"},
        "missing_key": {**good, "tls_key_file": tmp_path / "absent.key"},
        "not_a_certificate": {**good, "tls_cert_file": pki.server.key},
        "mismatched_key": {**good, "tls_key_file": _mismatched_key(tmp_path)},
        "encrypted_key": {**good, "tls_key_file": _encrypted_key(tmp_path, pki)},
        "ca_without_client_auth": {**good, "tls_client_ca_file": pki.ca},
    }[case]
    with pytest.raises(TransportConfigError) as raised:
        uvicorn_options(_settings(tmp_path, **values))
    assert expected in raised.value.message.text("en")
    assert "\n" not in raised.value.message.text("en") and "\n" not in raised.value.message.text(
        "zh"
    )


def test_serve_with_a_mismatched_key_exits_with_one_line(tmp_path: Path, pki: Pki) -> None:
    env = {
        **os.environ,
        "VAULT_HOME": str(tmp_path / "home"),
        "VAULT_TLS_CERT_FILE": str(pki.server.cert),
        "VAULT_TLS_KEY_FILE": str(_mismatched_key(tmp_path)),
        "VAULT_LANG": "en",
    }
    done = subprocess.run(
        [sys.executable, "-c", "from api.cli.main import main; main()", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("resident-vault: the private key ")
    assert "does not match the certificate" in lines[0]
    assert not (tmp_path / "home").exists()  # nothing started, nothing written
