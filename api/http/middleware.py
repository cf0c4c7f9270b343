"""Request context and transport security, as pure ASGI middleware (so neither buffers a
streamed export).

* `RequestContext`: a request id on every request and response, a cap on body size, and
  one read of the change stamp per request (`vault.stamps`).
* `TransportSecurity`: which proxies to believe (X-Forwarded-Proto/For and the forwarded
  client certificate, only from `VAULT_FORWARDED_ALLOW_IPS`), the client certificate of
  the request (`request.state.client_certificate`, for RFC 8705), and the security
  headers of every response.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from typing import Any

import structlog
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.http.problems import problem
from api.http.settings import HttpSettings
from api.http.tls import PresentedCertificate, certificate_from_header, certificate_from_tls
from vault.stamps import one_stamp_per_request

log = structlog.get_logger(__name__)

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class BodyTooLarge(Exception):
    pass


class RequestContext:
    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get("x-request-id", "")
        request_id = given if _SAFE_ID.match(given) else f"req_{uuid.uuid4().hex}"
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            await _too_large(scope, receive, send, request_id)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            with one_stamp_per_request():
                await self.app(scope, limited_receive, send_with_id)
        except BodyTooLarge:
            if not started:
                await _too_large(scope, receive, send, request_id)
        finally:
            structlog.contextvars.unbind_contextvars("request_id")


async def _too_large(scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
    """The one problem answered before the app: built the same way as every other."""
    response = problem(Request(scope), "payload-too-large")
    response.headers["X-Request-ID"] = request_id
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    await response(scope, receive, send)


# -- transport security ------------------------------------------------------------------------

CLIENT_CERTIFICATE_STATE = "client_certificate"
# The pages set their own, stricter, header set (api/pages/core.py): a referrer policy the
# same-origin checks of their forms need, and a CSP that lets their own scripts run.
PAGE_PREFIXES = ("/portal", "/desk", "/console", "/pages-static")
API_CSP = b"default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
HTML_CSP = b"frame-ancestors 'none'"


class TrustedProxies:
    """The addresses whose X-Forwarded-* and certificate headers are believed.

    `VAULT_FORWARDED_ALLOW_IPS` as uvicorn reads `--forwarded-allow-ips`: comma-separated
    addresses and networks (`10.0.0.0/8`), `*` for any (only where nothing else can reach
    the port), and other literals (a unix socket path) compared as text.
    """

    def __init__(self, spec: str | None) -> None:
        items = [item.strip() for item in (spec or "").split(",") if item.strip()]
        self.any = "*" in items
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.literals: set[str] = set()
        for item in items:
            if item == "*":
                continue
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self.literals.add(item)

    def __bool__(self) -> bool:
        return self.any or bool(self.networks or self.literals)

    def trusts(self, host: str | None) -> bool:
        if host is None:
            return False
        if self.any or host in self.literals:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def client_of(self, forwarded_for: str) -> str | None:
        """The nearest address in X-Forwarded-For that is not one of our proxies: entries
        left of it were written by the client and prove nothing."""
        hosts = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        for host in reversed(hosts):
            if not self.trusts(host):
                return host
        return hosts[0] if hosts else None


class TransportSecurity:
    """Where the request really came from, its client certificate, and secure headers.

    From a trusted proxy: the scheme (X-Forwarded-Proto), the client address
    (X-Forwarded-For) and, with `VAULT_CLIENT_CERT_HEADER`, the client certificate the
    proxy verified. From anyone else those headers are ignored, and the certificate is the
    one of this server's own TLS handshake, if any. The certificate header is removed from
    the scope either way, so nothing further in can read an unvetted one.

    Every response gets `X-Content-Type-Options: nosniff`; over https (direct or through a
    trusted proxy) `Strict-Transport-Security`; outside the pages, which set their own,
    `Referrer-Policy: no-referrer`, no framing (`X-Frame-Options`, CSP `frame-ancestors`)
    and `Cache-Control: no-store` unless the route chose a policy (public metadata does).
    """

    def __init__(self, app: ASGIApp, settings: HttpSettings) -> None:
        self.app = app
        self.proxies = TrustedProxies(settings.forwarded_allow_ips)
        header = (settings.client_cert_header or "").strip().lower()
        self.cert_header = header.encode("latin-1") if header else None
        self.hsts = (
            f"max-age={settings.hsts_seconds}; includeSubDomains".encode()
            if settings.hsts_seconds > 0
            else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        peer = scope.get("client")
        from_proxy = self.proxies.trusts(peer[0] if peer else None)
        certificate: PresentedCertificate | None = None
        forwarded_cert: str | None = None
        kept: list[tuple[bytes, bytes]] = []
        proto: str | None = None
        forwarded_for: list[str] = []
        for name, value in scope["headers"]:
            if self.cert_header is not None and name == self.cert_header:
                forwarded_cert = value.decode("latin-1")
                continue
            if name == b"x-forwarded-proto":
                proto = value.decode("latin-1")
            elif name == b"x-forwarded-for":
                forwarded_for.append(value.decode("latin-1"))
            kept.append((name, value))
        scope["headers"] = kept
        if from_proxy:
            self._apply_forwarded(scope, proto, forwarded_for)
            if self.cert_header is not None:
                certificate = certificate_from_header(forwarded_cert or "")
        elif forwarded_cert is not None:
            log.warning("transport.untrusted_cert_header", peer=peer[0] if peer else None)
        if certificate is None and not (from_proxy and self.cert_header is not None):
            certificate = certificate_from_tls(scope)
        scope.setdefault("state", {})[CLIENT_CERTIFICATE_STATE] = certificate
        await self.app(scope, receive, self._with_headers(scope, send))

    def _apply_forwarded(self, scope: Scope, proto: str | None, forwarded_for: list[str]) -> None:
        if proto is not None:
            nearest = proto.split(",")[-1].strip().lower()
            if nearest in ("http", "https"):
                scope["scheme"] = (
                    nearest if scope["type"] == "http" else nearest.replace("http", "ws")
                )
        if forwarded_for:
            host = self.proxies.client_of(",".join(forwarded_for))
            if host:
                scope["client"] = (host, 0)

    def _with_headers(self, scope: Scope, send: Send) -> Send:
        secure = scope.get("scheme") in ("https", "wss")
        page = str(scope.get("path", "")).startswith(PAGE_PREFIXES)
        hsts = self.hsts if secure else None

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}

                def add(name: bytes, value: bytes) -> None:
                    if name not in present:
                        headers.append((name, value))
                        present.add(name)

                if hsts is not None:
                    add(b"strict-transport-security", hsts)
                add(b"x-content-type-options", b"nosniff")
                if not page:
                    content_type = next(
                        (v for n, v in headers if n.lower() == b"content-type"), b""
                    )
                    html = content_type.startswith(b"text/html")
                    add(b"referrer-policy", b"no-referrer")
                    add(b"x-frame-options", b"DENY")
                    add(b"content-security-policy", HTML_CSP if html else API_CSP)
                    add(b"cache-control", b"no-store")
                message["headers"] = headers
            await send(message)

        return send_with_headers


def client_certificate(scope_state: Any) -> PresentedCertificate | None:
    """The request's client certificate, as `TransportSecurity` found it (None if none)."""
    value = getattr(scope_state, CLIENT_CERTIFICATE_STATE, None)
    return value if isinstance(value, PresentedCertificate) else None
