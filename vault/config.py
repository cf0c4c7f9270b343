"""Configuration: environment variables (VAULT_*) over embedded defaults.

The embedded default is a data directory `./.vault` (or `$VAULT_HOME`) holding an SQLite
database and the local keyring; production points `VAULT_DATABASE_URL` at PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from vault.crypto import Suite


class VaultSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VAULT_", extra="ignore")

    home: Path = Field(default=Path(".vault"), description="data directory")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL")
    crypto_suite: Suite = Field(default=Suite.AES_256_GCM, description="suite for new keys")
    keyring: str = Field(default="local", description="local (file) keyring")
    data_key_cache_size: int = Field(default=10_000, ge=0)
    data_key_cache_seconds: float = Field(default=60.0, ge=0)
    deployment: str = Field(default="demo", pattern=r"^[a-z0-9][a-z0-9.-]*$")
    log_origin: str | None = Field(default=None, description="audit log origin (key name)")
    checkpoint_interval_seconds: float = Field(default=10.0, gt=0)
    opa_url: str | None = Field(default=None, description="OPA server; embedded engine if unset")
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
