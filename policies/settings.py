"""The policy engine's settings: an OPA server instead of the embedded engine, and the
bundle revision it must serve.

`VAULT_<NAME>` each, read and validated like every layer's (`vault.config.LayerSettings`).
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, SecretStr

from vault.config import LayerSettings, label

_REVISION = re.compile(r"^(any|rev-[0-9a-f]{16})$")


class PoliciesSettings(LayerSettings):
    """Which engine decides: the embedded one, or an OPA server (sidecar) under a pinned
    bundle revision."""

    opa_url: str | None = Field(default=None, description="OPA server; embedded engine if unset")
    opa_expected_revision: str | None = Field(
        default=None,
        description="bundle revision the OPA server must report; the shipped one if unset, "
        "'any' to accept whatever it serves",
    )
    opa_ca_file: Path | None = Field(default=None, description="CA bundle for an https OPA")
    opa_token: SecretStr | None = Field(default=None, description="bearer token for OPA")

    def own_problems(self) -> list[str]:
        revision = self.opa_expected_revision
        if revision is not None and not _REVISION.fullmatch(revision):
            return [
                f"{label('opa_expected_revision')}: expected 'any' or a revision like "
                "rev-0123456789abcdef"
            ]
        return []
