"""The pages' settings: where people reach them (`VAULT_PUBLIC_URL`), how long a
signed-in session and a login in progress last.

`VAULT_<NAME>` each, read and validated like every layer's (`vault.config.LayerSettings`).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from vault.config import LayerSettings

DEFAULT_PORTS = {"http": 80, "https": 443}


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def public_origin(url: str) -> str:
    """`url` as a browser names its origin (`https://vault.example.gov.cn`, `http://127.0.0.1:8001`):
    lower-case scheme and host, no default port, no trailing slash. ValueError says why
    it cannot be one: not absolute http(s), a path, query, fragment or user name, or plain
    http to a host other than this machine (the pages' cookies are Secure)."""
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r} is not a URL") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in DEFAULT_PORTS or not host:
        raise ValueError(f"{text!r} is not an absolute http(s) URL")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "?" in text or "#" in text:
        raise ValueError(f"{text!r} has a path, query or fragment: give the origin only")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{text!r} holds a user name: give the origin only")
    if scheme == "http" and not is_loopback(host):
        raise ValueError(f"{text!r}: plain http only for this machine (127.0.0.1, localhost)")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    return f"{scheme}://{netloc}"


class PagesSettings(LayerSettings):
    """Where the portal, the desk and the console are reached, and their sessions
    (api.pages.core.SessionStore)."""

    public_url: str | None = Field(
        default=None,
        description="the origin(s) people reach the pages at, comma-separated "
        "(`https://vault.example.gov.cn`): the pages' OAuth client gets their callback "
        "addresses at start, and sign-ins behind a proxy come back there; plain http only "
        "for 127.0.0.1/localhost",
    )

    page_session_seconds: int = Field(
        default=8 * 3600, ge=60, description="a signed-in page session ends this long after login"
    )
    page_login_seconds: int = Field(
        default=600, ge=30, description="how long a login may take, from the form to the callback"
    )

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return ",".join(
            dict.fromkeys(public_origin(item) for item in value.split(",") if item.strip())
        )

    @property
    def public_origins(self) -> tuple[str, ...]:
        """`VAULT_PUBLIC_URL` as origins, the first the main one; empty when unset."""
        return tuple(self.public_url.split(",")) if self.public_url else ()
