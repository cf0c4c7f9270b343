"""Consent's settings: how long a break-glass grant lasts, by default and at the most.

`VAULT_<NAME>` each, read and validated like every layer's (`vault.config.LayerSettings`).
"""

from __future__ import annotations

from pydantic import Field

from vault.config import LayerSettings, label


class ConsentSettings(LayerSettings):
    """Break-glass grants (consent.breakglass): a worker's emergency access is short."""

    break_glass_minutes: int = Field(
        default=60, ge=1, description="how long a break-glass grant lasts unless asked otherwise"
    )
    break_glass_max_minutes: int = Field(
        default=240, ge=1, le=24 * 60, description="the longest a worker may ask a grant to last"
    )

    def own_problems(self) -> list[str]:
        if self.break_glass_minutes > self.break_glass_max_minutes:
            return [
                f"{label('break_glass_minutes')}: longer than "
                f"{label('break_glass_max_minutes')} ({self.break_glass_max_minutes})"
            ]
        return []
