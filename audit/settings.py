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
    # Insider-abuse detection (audit.detection): how often to scan, and what suspends.
    alert_scan_seconds: float = Field(
        default=60.0, gt=0, description="how often the log is scanned for insider abuse"
    )
    alert_volume_floor: int = Field(
        default=50, ge=1, description="fewest reads in a window that can raise a volume alert"
    )
    alert_suspend_on: str = Field(
        default="volume", description="comma-separated alert kinds that suspend the actor"
    )

    @property
    def resolved_log_origin(self) -> str:
        return self.log_origin or f"resident-vault.example/{self.deployment}/audit"
