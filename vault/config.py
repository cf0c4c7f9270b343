"""Configuration: environment variables (VAULT_*) over embedded defaults.

The embedded default is a data directory `./.vault` (or `$VAULT_HOME`) holding an SQLite
database and the local keyring; production points `VAULT_DATABASE_URL` at PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from vault.crypto import Suite


class VaultSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VAULT_", extra="ignore")

    home: Path = Field(default=Path(".vault"), description="data directory")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL")
    # -- PostgreSQL in production (issue 8) ------------------------------------------------
    database_replica_url: str | None = Field(
        default=None, description="read replica for lists, exports and statistics"
    )
    database_pool_size: int = Field(default=10, ge=1, le=500)
    database_max_overflow: int = Field(default=10, ge=0, le=500)
    database_pool_timeout_seconds: float = Field(default=10.0, gt=0)
    database_statement_timeout_ms: int = Field(
        default=15_000, ge=0, description="per statement; 0 disables"
    )
    crypto_suite: Suite = Field(default=Suite.AES_256_GCM, description="suite for new keys")
    keyring: str = Field(
        default="local", pattern=r"^(local|pkcs11)$", description="local (file) or pkcs11 (HSM)"
    )
    # -- PKCS#11 keyring (issue 8): keys live in the token and never leave it ---------------
    pkcs11_module: Path = Field(
        default=Path("/usr/lib/softhsm/libsofthsm2.so"), description="the PKCS#11 library"
    )
    pkcs11_token_label: str | None = Field(default=None, description="token to use")
    pkcs11_pin: SecretStr | None = Field(default=None, description="user PIN (secret)")
    pkcs11_key_prefix: str = Field(
        default="rv", pattern=r"^[A-Za-z0-9_.-]{1,32}$",
        description="label prefix of this vault's objects, so vaults can share a token",
    )  # fmt: skip
    data_key_cache_size: int = Field(default=10_000, ge=0)
    data_key_cache_seconds: float = Field(default=60.0, ge=0)
    deployment: str = Field(default="demo", pattern=r"^[a-z0-9][a-z0-9.-]*$")
    log_origin: str | None = Field(default=None, description="audit log origin (key name)")
    checkpoint_interval_seconds: float = Field(default=10.0, gt=0)
    opa_url: str | None = Field(default=None, description="OPA server; embedded engine if unset")
    opa_expected_revision: str | None = Field(
        default=None,
        description="bundle revision the OPA server must report; the shipped one if unset, "
        "'any' to accept whatever it serves",
    )
    opa_ca_file: Path | None = Field(default=None, description="CA bundle for an https OPA")
    opa_token: SecretStr | None = Field(default=None, description="bearer token for OPA")
    # -- transport (issue 8) ---------------------------------------------------------------
    tls_cert_file: Path | None = Field(default=None, description="server certificate (PEM)")
    tls_key_file: Path | None = Field(default=None, description="its private key (PEM)")
    tls_client_ca_file: Path | None = Field(
        default=None, description="CA of departmental client certificates (mutual TLS)"
    )
    tls_client_auth: str = Field(default="none", pattern=r"^(none|optional|required)$")
    forwarded_allow_ips: str | None = Field(
        default=None, description="reverse proxies trusted for X-Forwarded-* (comma-separated)"
    )
    client_cert_header: str | None = Field(
        default=None,
        description="header a trusted proxy puts the client certificate in (URL-encoded PEM)",
    )
    hsts_seconds: int = Field(default=31_536_000, ge=0)
    # -- operations (issue 8) --------------------------------------------------------------
    metrics_enabled: bool = Field(default=True, description="Prometheus /metrics")
    metrics_token: SecretStr | None = Field(
        default=None, description="bearer token /metrics requires, if set"
    )
    tracing_enabled: bool = Field(
        default=False, description="OpenTelemetry traces (configured by OTEL_* variables)"
    )
    shutdown_grace_seconds: float = Field(default=20.0, ge=0)
    backup_key_file: Path | None = Field(
        default=None, description="key that encrypts backups (made at first backup if unset)"
    )
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # Per-caller rate limits by the decision's rate class (requests per minute; bulk per hour).
    rate_limit_standard: int = Field(default=1200, ge=1)
    rate_limit_sensitive: int = Field(default=300, ge=1)
    rate_limit_bulk: int = Field(default=60, ge=1)
    # Insider-abuse detection (audit.detection): how often to scan, and what suspends.
    alert_scan_seconds: float = Field(default=60.0, gt=0)
    alert_volume_floor: int = Field(default=50, ge=1)
    alert_suspend_on: str = Field(
        default="volume", description="comma-separated alert kinds that suspend the actor"
    )

    @property
    def resolved_log_origin(self) -> str:
        return self.log_origin or f"resident-vault.example/{self.deployment}/audit"

    @property
    def keyring_path(self) -> Path:
        return self.home / "keyring.json"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'vault.db').resolve()}"
