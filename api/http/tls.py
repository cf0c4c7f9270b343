"""Transport security: the server's TLS context, and the client certificate of a request.

* `server_context(settings)` builds the TLS context `serve` runs with: TLS 1.2 or newer,
  AEAD ciphers with forward secrecy only, and, with `VAULT_TLS_CLIENT_CA_FILE`, client
  certificates asked for (`optional`) or demanded (`required`: the handshake fails without
  one). Every file is checked first, so a bad one stops start-up with one line.
* `uvicorn_options(settings)` is what `serve` (and the TLS tests) hand to uvicorn.
* `PresentedCertificate` is the certificate a request came with, directly or through a
  trusted proxy (`api.http.middleware.TransportSecurity` finds it): its RFC 8705 thumbprint,
  subject DN and subject alternative names.

How the application sees the peer certificate. uvicorn (0.54 here) does not implement the
ASGI TLS extension: the pull requests that add it (Kludex/uvicorn#1119, #3043, #3133) are
unmerged, so a request scope carries no certificate. We weighed three ways round that:
* only a reverse proxy forwarding it in a header: supported (`VAULT_CLIENT_CERT_HEADER`),
  but a deployment without a proxy would then have no mutual TLS at all;
* another ASGI server: none installed here implements the extension either;
* a uvicorn HTTP protocol subclass, passed through uvicorn's documented `http=` option
  (which takes a class), that puts the standard `scope["extensions"]["tls"]` (ASGI TLS
  extension 0.2) on each request of a TLS connection. It relies on only two things of
  uvicorn's protocols, `connection_made(transport)` and the `app` attribute they call,
  both unchanged for years. The application reads only the standard extension, so once
  uvicorn fills it this hook is deleted and nothing else changes. This is the one we chose.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import re
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from uvicorn.protocols.http.h11_impl import H11Protocol

from api.http.settings import HttpSettings
from api.logging import uvicorn_log_config
from vault.i18n import Message

log = structlog.get_logger(__name__)

# TLS 1.2 suites: ECDHE key exchange (forward secrecy) with an AEAD cipher, as in Mozilla's
# "intermediate" profile. TLS 1.3 suites are all AEAD and need no list.
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
_TLS_VERSION_CODES = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
MAX_CERTIFICATE_BYTES = 16 * 1024


class TransportConfigError(Exception):
    """TLS settings the service cannot start with; `message` says why, shown in the
    operator's language (`exc.message.text(lang)`)."""

    def __init__(self, message: Message) -> None:
        super().__init__(message.text("en"))  # logs and tracebacks read English
        self.message = message


# -- the server's side -------------------------------------------------------------------------


def _read(path: Path, what: Message, env: str) -> bytes:
    """The file's bytes; `what` names the file in the sentence (`error.tls.file.*`)."""
    if not path.is_file():
        raise TransportConfigError(
            Message("error.tls.file-missing", {"what": what, "path": str(path), "env": env})
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TransportConfigError(
            Message(
                "error.tls.file-unreadable",
                {"what": what, "path": str(path), "reason": exc.strerror, "env": env},
            )
        ) from None


def _certificates(data: bytes, path: Path, env: str) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    if not certificates:
        raise TransportConfigError(
            Message("error.tls.not-certificate", {"path": str(path), "env": env})
        )
    return certificates


def _private_key(data: bytes, path: Path) -> CertificateIssuerPrivateKeyTypes:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TransportConfigError(
            Message("error.tls.key-encrypted", {"path": str(path)})
        ) from None
    except ValueError:
        raise TransportConfigError(
            Message("error.tls.not-key", {"path": str(path), "env": "VAULT_TLS_KEY_FILE"})
        ) from None
    return key  # type: ignore[return-value]


def _public_der(key: Any) -> bytes:
    raw: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return raw


def check_tls_files(settings: HttpSettings, now: datetime | None = None) -> None:
    """Refuse, with one line, TLS settings that cannot work; nothing to check without TLS."""
    cert_file, key_file = settings.tls_cert_file, settings.tls_key_file
    if cert_file is None and key_file is None:
        if settings.tls_client_auth != "none":
            raise TransportConfigError(Message("error.tls.client-auth-needs-certificate"))
        return
    if cert_file is None or key_file is None:
        raise TransportConfigError(Message("error.tls.certificate-and-key"))
    chain = _certificates(
        _read(cert_file, Message("error.tls.file.certificate"), "VAULT_TLS_CERT_FILE"),
        cert_file,
        "VAULT_TLS_CERT_FILE",
    )
    key = _private_key(
        _read(key_file, Message("error.tls.file.private-key"), "VAULT_TLS_KEY_FILE"), key_file
    )
    if _public_der(chain[0].public_key()) != _public_der(key.public_key()):
        raise TransportConfigError(
            Message("error.tls.key-mismatch", {"key": str(key_file), "certificate": str(cert_file)})
        )
    expires = chain[0].not_valid_after_utc
    if expires <= (now or datetime.now(UTC)):
        raise TransportConfigError(
            Message(
                "error.tls.certificate-expired",
                {"certificate": str(cert_file), "expired": expires.isoformat()},
            )
        )
    ca_file = settings.tls_client_ca_file
    if settings.tls_client_auth != "none" and ca_file is None:
        raise TransportConfigError(Message("error.tls.client-auth-needs-ca"))
    if ca_file is not None:
        if settings.tls_client_auth == "none":
            raise TransportConfigError(Message("error.tls.ca-without-client-auth"))
        _certificates(
            _read(ca_file, Message("error.tls.file.client-ca"), "VAULT_TLS_CLIENT_CA_FILE"),
            ca_file,
            "VAULT_TLS_CLIENT_CA_FILE",
        )


def server_context(settings: HttpSettings) -> ssl.SSLContext | None:
    """The TLS context to serve with, or None for plain HTTP (behind a proxy, or a demo)."""
    check_tls_files(settings)
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= ssl.OP_NO_RENEGOTIATION
    try:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
        if settings.tls_client_ca_file is not None:
            context.load_verify_locations(cafile=settings.tls_client_ca_file)
    except ssl.SSLError as exc:  # checked above; anything left is OpenSSL's to say
        raise TransportConfigError(Message("error.tls.invalid", {"reason": exc.reason})) from None
    context.verify_mode = {
        "none": ssl.CERT_NONE,
        "optional": ssl.CERT_OPTIONAL,
        "required": ssl.CERT_REQUIRED,
    }[settings.tls_client_auth]
    return context


# -- the ASGI TLS extension, which uvicorn does not fill (see the module docstring) ----------


def tls_extension(ssl_object: ssl.SSLObject) -> dict[str, Any]:
    """`scope["extensions"]["tls"]` as ASGI TLS extension 0.2 defines it, for one connection.

    Only the leaf of the client's chain is reachable from Python 3.11's `ssl`; the spec
    puts the client's own certificate first, which is all RFC 8705 needs.
    """
    der = ssl_object.getpeercert(binary_form=True)
    name: str | None = None
    if der:
        try:
            name = x509.load_der_x509_certificate(der).subject.rfc4514_string()
        except ValueError:
            name = None
    return {
        "server_cert": None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": name,
        "client_cert_error": None,  # a certificate that fails verification ends the handshake
        "tls_version": _TLS_VERSION_CODES.get(ssl_object.version() or ""),
        "cipher_suite": None,  # Python's ssl names the suite but gives no IANA number
    }


class _TlsScope:
    """The protocol's app, with the connection's TLS extension put on each request scope."""

    def __init__(self, app: Any, tls: dict[str, Any]) -> None:
        self.app = app
        self.tls = tls

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            scope.setdefault("extensions", {}).setdefault("tls", self.tls)
        await self.app(scope, receive, send)


def _see_tls(protocol: H11Protocol | Any, transport: asyncio.Transport) -> None:
    """Wrap the protocol's app so each request on a TLS connection carries its details."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is not None:
        protocol.app = _TlsScope(protocol.app, tls_extension(ssl_object))


class TlsH11Protocol(H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        _see_tls(self, transport)


def tls_protocol_class() -> type[asyncio.Protocol]:
    """uvicorn's own choice of HTTP protocol ("auto": httptools if installed), with the hook."""
    try:
        from uvicorn.protocols.http.httptools_impl import (  # noqa: PLC0415 - optional
            HttpToolsProtocol,
        )
    except ImportError:  # httptools not installed: uvicorn would use h11 too
        return TlsH11Protocol

    class TlsHttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            _see_tls(self, transport)

    return TlsHttpToolsProtocol


@dataclass(frozen=True)
class ServerTransport:
    """What `serve` gives uvicorn, and the scheme clients reach it by."""

    scheme: str
    uvicorn_kwargs: dict[str, Any]


def uvicorn_options(settings: HttpSettings) -> ServerTransport:
    """uvicorn's keyword arguments for TLS and proxies; raises TransportConfigError.

    uvicorn's own proxy-header handling is turned off: `TransportSecurity` does it, because
    a forwarded client certificate must be trusted under the same decision, and uvicorn's
    middleware replaces the peer address before the application could make it.
    """
    context = server_context(settings)
    # uvicorn's own log lines as structlog JSON, like every other event.
    kwargs: dict[str, Any] = {
        "proxy_headers": False,
        "server_header": False,
        "log_config": uvicorn_log_config(),
    }
    if context is None:
        return ServerTransport("http", kwargs)
    kwargs["ssl_context_factory"] = lambda _config, _default: context
    kwargs["http"] = tls_protocol_class()
    return ServerTransport("https", kwargs)


# -- the client's side --------------------------------------------------------------------------


def thumbprint(der: bytes) -> str:
    """RFC 8705 `x5t#S256`: base64url of the SHA-256 of the DER certificate, unpadded."""
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")


_DN_SEPARATOR = re.compile(r"(?<!\\)\s*([,+=])\s*")
_DN_ATTRIBUTE = re.compile(r"(^|(?<!\\)[,+])([A-Za-z][A-Za-z0-9-]*)=")


def canonical_dn(text: str) -> str:
    """A subject DN as RFC 4514 text, normalised by parsing, so spaces around separators or
    the case of attribute names (`cn=` for `CN=`) do not matter; ValueError if not a DN."""
    compact = _DN_SEPARATOR.sub(r"\1", text.strip())
    upper = _DN_ATTRIBUTE.sub(lambda m: m.group(1) + m.group(2).upper() + "=", compact)
    return x509.Name.from_rfc4514_string(upper).rfc4514_string()


@dataclass(frozen=True)
class PresentedCertificate:
    """The certificate a request came with (already verified by the TLS layer or the proxy)."""

    der: bytes
    via: str  # "tls" (this server's handshake) or "proxy" (a trusted proxy's header)

    @cached_property
    def thumbprint(self) -> str:
        return thumbprint(self.der)

    @cached_property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)

    @property
    def subject_dn(self) -> str:
        return self.certificate.subject.rfc4514_string()

    def subject_alternative_names(self) -> dict[str, list[str]]:
        """SAN values by RFC 8705 kind: dns, uri, ip, email."""
        try:
            san = self.certificate.extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            ).value
        except x509.ExtensionNotFound:
            return {}
        return {
            "dns": list(san.get_values_for_type(x509.DNSName)),
            "uri": list(san.get_values_for_type(x509.UniformResourceIdentifier)),
            "ip": [str(ip) for ip in san.get_values_for_type(x509.IPAddress)],
            "email": list(san.get_values_for_type(x509.RFC822Name)),
        }

    def matches(self, subject_dn: str | None, san: str | None) -> bool:
        """RFC 8705 2.1.2: the registered subject DN, or the one registered SAN
        (`dns:`, `uri:`, `ip:` or `email:` and its value), is this certificate's."""
        if subject_dn is not None:
            try:
                return canonical_dn(subject_dn) == self.subject_dn
            except ValueError:
                return False
        if san is None:
            return False
        kind, _, value = san.partition(":")
        presented = self.subject_alternative_names().get(kind, [])
        if kind == "dns":
            return value.lower() in [v.lower() for v in presented]
        if kind == "ip":
            try:
                value = str(ipaddress.ip_address(value))
            except ValueError:
                return False
        return value in presented


def certificate_from_tls(scope: Any) -> PresentedCertificate | None:
    """The client certificate of this server's own TLS handshake (ASGI TLS extension)."""
    tls = (scope.get("extensions") or {}).get("tls")
    chain = tls.get("client_cert_chain") if isinstance(tls, dict) else None
    if not chain:
        return None
    try:
        return PresentedCertificate(ssl.PEM_cert_to_DER_cert(str(chain[0])), "tls")
    except ValueError:
        return None


def certificate_from_header(value: str) -> PresentedCertificate | None:
    """A URL-encoded PEM certificate, as nginx's `$ssl_client_escaped_cert` sends it."""
    if not value or len(value) > 3 * MAX_CERTIFICATE_BYTES:
        return None
    try:
        certificate = x509.load_pem_x509_certificate(unquote(value).encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        log.warning("transport.bad_client_cert_header")
        return None
    return PresentedCertificate(certificate.public_bytes(serialization.Encoding.DER), "proxy")


def pem_thumbprint(path: Path) -> str:
    """The `x5t#S256` of the first certificate in a PEM file (for registering a client)."""
    data = path.read_bytes()
    certificate = x509.load_pem_x509_certificate(data)
    return thumbprint(certificate.public_bytes(serialization.Encoding.DER))


def describe(settings: HttpSettings) -> dict[str, Any]:
    """The transport settings as logged at start-up (paths and modes; no key material)."""
    return {
        "tls": settings.tls_cert_file is not None,
        "client_auth": settings.tls_client_auth,
        "client_ca": str(settings.tls_client_ca_file or "") or None,
        "trusted_proxies": settings.forwarded_allow_ips,
        "client_cert_header": settings.client_cert_header,
        "hsts_seconds": settings.hsts_seconds,
    }
