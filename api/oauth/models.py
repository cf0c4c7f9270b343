"""Tables of the OAuth server: clients, codes, refresh tokens, revocations, keys (the people
who log in are `vault.accounts.User`).

No secret is stored as given: client secrets and passwords as Argon2 hashes, authorization
codes and refresh tokens as SHA-256 digests (they are long random strings, so a fast hash
suffices). Access tokens are JWTs and are not stored at all; only revoked ones are listed,
by `jti`, until they expire.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    ForeignKey,
    LargeBinary,
    String,
    Text,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from vault.models import Base, TZDateTime, utcnow


class OAuthClient(Base):
    """A registered client: an organisation's system (confidential) or the web pages (public)."""

    __tablename__ = "oauth_clients"
    __table_args__ = (CheckConstraint("kind IN ('confidential', 'public')", name="kind"),)

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    # Argon2 hash of the secret; None for a public client, which has none.
    secret_hash: Mapped[str | None] = mapped_column(String(255))
    organisation_id: Mapped[str | None] = mapped_column(ForeignKey("organisations.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    # First-party clients (our own pages) skip the approval screen.
    first_party: Mapped[bool] = mapped_column(Boolean, default=False)
    grant_types: Mapped[list[str]] = mapped_column(JSON)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    purposes: Mapped[list[str]] = mapped_column(JSON)
    redirect_uris: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    # -- mutual TLS (RFC 8705) -----------------------------------------------------------
    # None: a client secret (client_secret_basic or _post); else tls_client_auth (PKI: the
    # subject DN or one SAN below) or self_signed_tls_client_auth (the thumbprints below).
    token_endpoint_auth_method: Mapped[str | None] = mapped_column(String(40))
    tls_client_auth_subject_dn: Mapped[str | None] = mapped_column(Text)
    # One subject alternative name as "<dns|uri|ip|email>:<value>".
    tls_client_auth_san: Mapped[str | None] = mapped_column(Text)
    # x5t#S256 thumbprints of the registered self-signed certificates.
    tls_client_certificates: Mapped[list[str] | None] = mapped_column(JSON)
    # Tokens carry cnf.x5t#S256 and work only over a connection with that certificate.
    tls_client_certificate_bound_access_tokens: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )


class AuthorizationCode(Base):
    """A code issued by the login form; single use, bound to client, redirect URI and PKCE."""

    __tablename__ = "oauth_authorization_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.client_id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("oauth_users.id"), index=True)
    # As given in the authorization request (None if it was left out), to compare at exchange.
    redirect_uri: Mapped[str | None] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(String(500))
    code_challenge: Mapped[str] = mapped_column(String(128))
    code_challenge_method: Mapped[str] = mapped_column(String(8))
    # The login session the tokens of this code will belong to; revoked if the code is reused.
    family_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(TZDateTime(), index=True)
    used_at: Mapped[datetime | None] = mapped_column(TZDateTime())

    # -- what authlib asks of an authorization code -------------------------------------

    def get_redirect_uri(self) -> str | None:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


class TokenFamily(Base):
    """One login: every refresh token rotated from it, and the access tokens they gave (`sid`).

    Revoking the family (logout, RFC 7009, or reuse of a rotated refresh token) ends them all.
    """

    __tablename__ = "oauth_token_families"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.client_id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("oauth_users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(TZDateTime(), index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    revoked_reason: Mapped[str | None] = mapped_column(String(32))


class RefreshToken(Base):
    """A refresh token, by digest. Each use rotates it: `rotated_at` marks a spent one."""

    __tablename__ = "oauth_refresh_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    family_id: Mapped[str] = mapped_column(ForeignKey("oauth_token_families.id"), index=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.client_id"))
    user_id: Mapped[str] = mapped_column(ForeignKey("oauth_users.id"))
    scope: Mapped[str] = mapped_column(String(500))
    issued_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(TZDateTime())
    rotated_at: Mapped[datetime | None] = mapped_column(TZDateTime())


class RevokedAccessToken(Base):
    """An access token revoked before its expiry (RFC 7009); kept until it would expire."""

    __tablename__ = "oauth_revoked_access_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64))
    revoked_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(TZDateTime(), index=True)


class TokenSigningKey(Base):
    """An Ed25519 key that signs access tokens; the private half stays in the keyring.

    The newest key not retired signs. A retired key stays published in the JWKS until
    `expires_after`, when every token it signed has expired.
    """

    __tablename__ = "oauth_signing_keys"

    kid: Mapped[str] = mapped_column(String(40), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(16))
    public_key: Mapped[bytes] = mapped_column(LargeBinary(64))
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    expires_after: Mapped[datetime | None] = mapped_column(TZDateTime())
