"""OAuth settings: environment variables VAULT_OAUTH_* over defaults made for `serve --demo`.

The issuer is fixed by configuration, never taken from a request's Host header: tokens are
checked against it, so a forged Host cannot change who the server says it is.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from api.oauth.scopes import Scope


class ExternalIssuer(BaseModel):
    """An OpenID Connect provider whose access tokens are accepted beside ours.

    It vouches for the people it names: a username it asserts is our user of that name
    (their role, organisation and jurisdiction come from our database, as for our own
    tokens), unless `username_prefix` keeps its names apart. Configure only a provider
    that is trusted for that.
    """

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$", description="short local name")
    issuer: str = Field(description="its `iss` value, exactly")
    jwks_url: str | None = Field(default=None, description="where its signing keys are")
    jwks: dict[str, Any] | None = Field(default=None, description="or the JWKS itself")
    audience: str | None = Field(default=None, description="expected `aud`; ours by default")
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "PS256", "ES256"])
    username_claim: str = "preferred_username"
    username_prefix: str = ""
    role_claim: str | None = None
    role_map: dict[str, str] = Field(default_factory=dict, description="its role names -> ours")
    organisation_claim: str | None = None
    resident_id_claim: str | None = None
    scope_claim: str = "scope"
    allowed_scopes: list[Scope] | None = Field(
        default=None, description="scopes it may grant; None means any registered scope"
    )
    jwks_cache_seconds: float = Field(default=600.0, ge=0)

    @model_validator(mode="after")
    def _keys_from_somewhere(self) -> ExternalIssuer:
        if (self.jwks_url is None) == (self.jwks is None):
            raise ValueError("give exactly one of jwks_url and jwks")
        return self


class OAuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VAULT_OAUTH_", extra="ignore")

    issuer: str = Field(
        default="http://127.0.0.1:8000",
        description="the authorization server's identifier (a URL without a trailing slash)",
    )
    audience: str | None = Field(default=None, description="the API's identifier; issuer + /v1")
    access_token_seconds: int = Field(default=300, ge=10, le=3600)
    refresh_token_seconds: int = Field(
        default=8 * 3600, ge=60, description="a login's refresh tokens end this long after it"
    )
    authorization_code_seconds: int = Field(default=60, ge=5, le=600)
    clock_leeway_seconds: int = Field(default=30, ge=0, le=300)
    login_max_failures: int = Field(default=5, ge=1, description="per username and address")
    login_window_seconds: float = Field(default=300.0, gt=0)
    # An office behind one address has its typos; a sprayer has one try per username.
    login_address_max_failures: int = Field(
        default=20, ge=1, description="failed logins per address, any username, in the window"
    )
    client_auth_max_failures: int = Field(
        default=10, ge=1, description="failed client authentications per client id, any address"
    )
    client_auth_address_max_failures: int = Field(
        default=30, ge=1, description="failed client authentications per address, any client id"
    )
    client_auth_window_seconds: float = Field(default=60.0, gt=0)
    csrf_max_age_seconds: int = Field(default=1800, ge=60)
    external_issuers: list[ExternalIssuer] = Field(default_factory=list)
    mtls_base_url: str | None = Field(
        default=None,
        description="where clients reach the token, revocation and introspection endpoints "
        "with mutual TLS (RFC 8705 mtls_endpoint_aliases); the issuer by default",
    )
    insecure_transport: bool = Field(
        default=False,
        description="accept plain http from any host (tests only; loopback http always works)",
    )

    @property
    def resolved_issuer(self) -> str:
        return self.issuer.rstrip("/")

    @property
    def resolved_audience(self) -> str:
        return self.audience or f"{self.resolved_issuer}/v1"

    def endpoint(self, path: str) -> str:
        return f"{self.resolved_issuer}{path}"

    def mtls_endpoint(self, path: str) -> str:
        return f"{(self.mtls_base_url or self.resolved_issuer).rstrip('/')}{path}"
