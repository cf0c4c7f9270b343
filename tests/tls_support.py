"""Real TLS for tests: a throwaway PKI made with `cryptography`, and the demo service served
by uvicorn with exactly the options `resident-vault serve` gives it (`api.http.tls`).

Certificates (all P-256, fictional names under `.example`):
* a CA for departments' client certificates, which also issues the server's certificate
  (SAN 127.0.0.1 and localhost);
* `civil` and `health`: two valid client certificates from that CA;
* `self_signed`: a department's self-signed certificate, accepted by the TLS layer because
  the client-CA bundle lists it, as docs/transport-security.md tells operators to do;
* `stranger`: a client certificate from another CA, which no handshake accepts.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from api.http.app import create_app
from api.http.tls import uvicorn_options
from api.settings import Settings
from policies import PolicyEngine
from tests.demo_server import (
    DemoServer,
    postgres_copy,
    prepare_demo,
    residents_in,
    serving,
    sidecar_engine,
)

ORG = "O=Example District,C=CN"


@dataclass(frozen=True)
class Identity:
    """A certificate and its key, as files (what `curl --cert --key` and httpx take)."""

    name: str
    cert: Path
    key: Path
    der: bytes
    subject_dn: str

    @property
    def pair(self) -> tuple[str, str]:
        return (str(self.cert), str(self.key))

    @property
    def x5t_s256(self) -> str:
        """RFC 8705 thumbprint, computed here rather than by api.http.tls, so tests check it."""
        digest = hashlib.sha256(self.der).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    @property
    def forwarded(self) -> str:
        """The certificate as nginx's `$ssl_client_escaped_cert` forwards it: URL-encoded PEM."""
        return quote(self.cert.read_text(encoding="ascii"), safe="")


def _name(dn: str) -> x509.Name:
    return x509.Name.from_rfc4514_string(dn)


def _write(
    directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> Identity:
    cert_path = directory / f"{name}.crt"
    key_path = directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return Identity(
        name,
        cert_path,
        key_path,
        cert.public_bytes(serialization.Encoding.DER),
        cert.subject.rfc4514_string(),
    )


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
    sans: list[x509.GeneralName] | None = None,
    days: int = 30,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer or (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        # Key identifiers, as `openssl req -x509` and CAs write them. Without them OpenSSL
        # finds a self-signed certificate in the trust bundle by subject DN alone, so two
        # with the same DN (a department's old and new one) could not both be trusted.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass(frozen=True)
class Pki:
    directory: Path
    ca: Path
    client_ca_bundle: Path  # the CA and the registered self-signed certificate
    server: Identity
    civil: Identity
    health: Identity
    self_signed: Identity
    other_self_signed: Identity
    stranger: Identity

    def client_context(self, identity: Identity | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        if identity is not None:
            context.load_cert_chain(*identity.pair)
        return context


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_dn = f"CN=Resident Vault Test CA,{ORG}"
    ca_cert = _certificate(ca_dn, ca_key, None, ca=True)
    ca = _write(directory, "ca", ca_cert, ca_key)
    issuer = (ca_cert.subject, ca_key)

    def issued(name: str, dn: str, **kwargs: Any) -> Identity:
        key = ec.generate_private_key(ec.SECP256R1())
        return _write(directory, name, _certificate(dn, key, issuer, **kwargs), key)

    server = issued(
        "server",
        f"CN=vault.example,{ORG}",
        server=True,
        sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
    )
    civil = issued(
        "civil",
        f"CN=Civil Affairs Bureau,OU=Systems,{ORG}",
        sans=[x509.DNSName("civil.dept.example")],
    )
    health = issued("health", f"CN=Health Commission,OU=Systems,{ORG}")

    def self_signed(name: str, dn: str) -> Identity:
        key = ec.generate_private_key(ec.SECP256R1())
        return _write(directory, name, _certificate(dn, key, None), key)

    own = self_signed("self-signed", f"CN=Emergency Management Office,{ORG}")
    other_own = self_signed("other-self-signed", f"CN=Emergency Management Office,{ORG}")
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    stranger_ca_key = ec.generate_private_key(ec.SECP256R1())
    stranger_ca = _certificate("CN=Somebody Else CA", stranger_ca_key, None, ca=True)
    stranger = _write(
        directory,
        "stranger",
        _certificate(
            f"CN=Civil Affairs Bureau,OU=Systems,{ORG}",
            stranger_key,
            (stranger_ca.subject, stranger_ca_key),
        ),
        stranger_key,
    )
    bundle = directory / "client-ca.pem"
    # Both self-signed certificates pass the handshake; only one is registered.
    bundle.write_bytes(ca.cert.read_bytes() + own.cert.read_bytes() + other_own.cert.read_bytes())
    return Pki(directory, ca.cert, bundle, server, civil, health, own, other_own, stranger)


# -- serving --------------------------------------------------------------------------------


@dataclass
class TlsServer(DemoServer):
    pki: Pki | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def resident_for(self, organisation: str) -> str:
        """Some real resident, by the organisation's pseudonym for them."""
        resident = (residents_in(self, "cm_hexie") or residents_in(self, "cm_xingfu"))[0]
        return self.pseudonym(organisation, resident)

    def http(self, identity: Identity | None = None, **kwargs: Any) -> httpx.Client:
        """A client of this server, presenting `identity`'s certificate if given."""
        if self.url.startswith("https"):
            assert self.pki is not None
            kwargs.setdefault("verify", self.pki.client_context(identity))
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)


@contextmanager
def run_tls_server(
    home: Path,
    database_url: str,
    *,
    pki: Pki | None,
    residents: int = 20,
    engine: PolicyEngine | None = None,
    **transport: Any,
) -> Iterator[TlsServer]:
    """The demo service, served like `resident-vault serve` with the given VAULT_TLS_* etc."""
    settings = Settings(
        home=home, database_url=database_url, checkpoint_interval_seconds=0.5, **transport
    )
    credentials = prepare_demo(settings, residents)
    options = uvicorn_options(settings)
    app = create_app(settings, engine=engine)
    with serving(app, **options.uvicorn_kwargs) as port:
        yield TlsServer(f"{options.scheme}://127.0.0.1:{port}", credentials, settings, app, pki)


@contextmanager
def tls_server_on(
    backend: str, home: Path, postgres_template: str | None, **kwargs: Any
) -> Iterator[TlsServer]:
    """On SQLite with the embedded engine, or on a fresh PostgreSQL copy of the migrated
    template with the real OPA server (the production profile), as demo_server_on does."""
    if backend == "sqlite":
        with run_tls_server(home / "home", f"sqlite:///{home / 'vault.db'}", **kwargs) as demo:
            yield demo
        return
    with (
        postgres_copy("rv_tls", postgres_template) as database,
        run_tls_server(home / "home", database, engine=sidecar_engine(), **kwargs) as demo,
    ):
        yield demo
