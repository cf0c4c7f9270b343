"""Access's settings: per-caller rate limits (`AccessSettings`, `VAULT_<NAME>`) and the
statistics' suppression threshold and privacy budget (`StatsSettings`, `VAULT_STATS_*`).

`RuntimeSettings` is what one access runs on: the vault's, the audit log's, consent's and
access's own settings in one object (`access.runtime.open_runtime` takes it).
`api.settings.Settings` composes it with the layers above, so the service's settings are one.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from audit.settings import AuditSettings
from consent.settings import ConsentSettings
from vault.config import LayerSettings, VaultSettings


class AccessSettings(LayerSettings):
    """Per-caller rate limits by the decision's rate class (requests per minute; bulk per
    hour), which the gate enforces."""

    rate_limit_standard: int = Field(
        default=1200, ge=1, description="standard requests per caller per minute"
    )
    rate_limit_sensitive: int = Field(
        default=300, ge=1, description="requests touching sensitive fields per caller per minute"
    )
    rate_limit_bulk: int = Field(
        default=60, ge=1, description="bulk (list/export) requests per caller per hour"
    )


class RuntimeSettings(AccessSettings, ConsentSettings, AuditSettings, VaultSettings):
    """The settings one access needs: the vault's, its audit log's, consent's and access's
    own."""


class StatsSettings(BaseSettings):
    """VAULT_STATS_*: the suppression threshold and the privacy budget."""

    model_config = SettingsConfigDict(env_prefix="VAULT_STATS_", extra="ignore")

    threshold: int = Field(default=5, ge=2, description="cells of 1..k-1 are suppressed")
    epsilon_per_month: float = Field(default=3.0, gt=0, description="per organisation")
    default_epsilon: float = Field(default=0.5, gt=0)
    max_epsilon: float = Field(default=1.0, gt=0, description="most one query may spend")
    delta: float = Field(default=1e-6, gt=0, lt=1e-3, description="Gaussian noise's delta")
