"""The pages' settings: how long a signed-in session and a login in progress last.

`VAULT_<NAME>` each, read and validated like every layer's (`vault.config.LayerSettings`).
"""

from __future__ import annotations

from pydantic import Field

from vault.config import LayerSettings


class PagesSettings(LayerSettings):
    """Sessions of the portal, the desk and the console (api.pages.core.SessionStore)."""

    page_session_seconds: int = Field(
        default=8 * 3600, ge=60, description="a signed-in page session ends this long after login"
    )
    page_login_seconds: int = Field(
        default=600, ge=30, description="how long a login may take, from the form to the callback"
    )
