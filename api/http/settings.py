"""The HTTP service's settings: transport (TLS, trusted proxies, HSTS), request bodies,
metrics, tracing and shutdown.

`VAULT_<NAME>` each, read and validated like every layer's (`vault.config.LayerSettings`).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, SecretStr

from vault.config import LayerSettings, env_name, label


class HttpSettings(LayerSettings):
    """How the service is reached, and how it is watched."""

    # -- transport (issue 8) ---------------------------------------------------------------
    tls_cert_file: Path | None = Field(default=None, description="server certificate (PEM)")
    tls_key_file: Path | None = Field(default=None, description="its private key (PEM)")
    tls_client_ca_file: Path | None = Field(
        default=None, description="CA of departmental client certificates (mutual TLS)"
    )
    tls_client_auth: str = Field(
        default="none",
        pattern=r"^(none|optional|required)$",
        description="client certificates: none, optional or required (needs the client CA)",
    )
    forwarded_allow_ips: str | None = Field(
        default=None, description="reverse proxies trusted for X-Forwarded-* (comma-separated)"
    )
    client_cert_header: str | None = Field(
        default=None,
        description="header a trusted proxy puts the client certificate in (URL-encoded PEM)",
    )
    hsts_seconds: int = Field(
        default=31_536_000, ge=0, description="Strict-Transport-Security max-age; 0 disables"
    )
    # -- operations (issue 8) --------------------------------------------------------------
    metrics_enabled: bool = Field(default=True, description="Prometheus /metrics")
    metrics_token: SecretStr | None = Field(
        default=None, description="bearer token /metrics requires, if set"
    )
    metrics_listen: str | None = Field(
        default=None,
        description="host:port of a listener of its own for /metrics (then not on the API's)",
    )
    metrics_allow_from: str | None = Field(
        default=None,
        description="addresses /metrics answers (comma-separated, networks, * for any); "
        "default loopback, or any with a token or on its own listener",
    )
    tracing_enabled: bool = Field(
        default=False, description="OpenTelemetry traces (configured by OTEL_* variables)"
    )
    shutdown_grace_seconds: float = Field(
        default=20.0, ge=0, description="time in-flight requests and audit writes get to finish"
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="largest request body accepted"
    )

    def own_problems(self) -> list[str]:
        problems: list[str] = []
        if self.tls_cert_file is not None and self.tls_key_file is None:
            problems.append(f"{label('tls_key_file')}: a TLS certificate needs its private key")
        if self.tls_key_file is not None and self.tls_cert_file is None:
            problems.append(f"{label('tls_cert_file')}: a TLS private key needs its certificate")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            problems.append(
                f"{label('tls_client_ca_file')}: client certificates need TLS "
                f"({env_name('tls_cert_file')} and {env_name('tls_key_file')})"
            )
        if self.metrics_listen is not None and metrics_address(self.metrics_listen) is None:
            problems.append(
                f"{label('metrics_listen')}: {self.metrics_listen!r} is not host:port "
                "(an IPv6 host in brackets: [::1]:9464)"
            )
        for given in (self.metrics_allow_from or "").split(","):
            item = given.strip()
            if item and item != "*" and not _network(item):
                problems.append(
                    f"{label('metrics_allow_from')}: {item!r} is not an address or a network"
                )
        if self.tls_client_auth != "none" and self.tls_client_ca_file is None:
            problems.append(
                f"{label('tls_client_auth')}: {self.tls_client_auth!r} needs the CA of client "
                f"certificates ({env_name('tls_client_ca_file')})"
            )
        return problems


def metrics_address(value: str) -> tuple[str, int] | None:
    """(host, port) of `VAULT_METRICS_LISTEN` (`127.0.0.1:9464`, `[::1]:9464`), or None."""
    host, sep, port = value.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        return None
    return host, int(port)


def _network(item: str) -> bool:
    try:
        ipaddress.ip_network(item, strict=False)
    except ValueError:
        return False
    return True
