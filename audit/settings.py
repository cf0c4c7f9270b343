"""The audit log's settings: its origin, how often it is checkpointed, and detection.

`VAULT_<NAME>` each, read and validated like every layer's (`vault.config.LayerSettings`).
"""

from __future__ import annotations

from pydantic import Field

from vault.config import LayerSettings


class AuditSettings(LayerSettings):
    """The log's origin and checkpoints; insider-abuse detection (audit.detection)."""

    deployment: str = Field(
        default="demo",
        pattern=r"^[a-z0-9][a-z0-9.-]*$",
        description="name of this deployment, part of the default audit log origin",
    )
    log_origin: str | None = Field(default=None, description="audit log origin (key name)")
    checkpoint_interval_seconds: float = Field(
        default=10.0, gt=0, description="how often a grown audit log gets a signed checkpoint"
    )
    # Insider-abuse detection (audit.detection): how often to scan, what is normal work,
    # and what suspends. Defaults let a worker list their grid twice in a day and a
    # department export its mandate's population once; docs/leakage-controls.md.
    alert_scan_seconds: float = Field(
        default=60.0, gt=0, description="how often the log is scanned for insider abuse"
    )
    alert_volume_floor: int = Field(
        default=200,
        ge=1,
        description="fewest resident-reads in the volume window that can raise a volume alert",
    )
    alert_volume_window_hours: int = Field(
        default=24,
        ge=1,
        le=168,
        description="the window of the volume and sensitive-bulk alerts, in hours",
    )
    alert_volume_factor: float = Field(
        default=3.0,
        gt=0,
        description="a volume alert needs more resident-reads than this many usual days",
    )
    alert_jurisdiction_passes: float = Field(
        default=3.0,
        ge=0,
        description="a volume alert needs more resident-reads than this many passes over "
        "the residents the actor's jurisdiction or mandate covers",
    )
    alert_baseline_days: int = Field(
        default=14,
        ge=1,
        le=90,
        description="the days of history an actor's usual day is taken from",
    )
    alert_sensitive_floor: int = Field(
        default=100,
        ge=1,
        description="fewest reads with sensitive fields in clear for a sensitive-bulk alert",
    )
    alert_suspend_on: str = Field(
        default="volume", description="comma-separated alert kinds that suspend the actor"
    )

    @property
    def resolved_log_origin(self) -> str:
        return self.log_origin or f"resident-vault.example/{self.deployment}/audit"
