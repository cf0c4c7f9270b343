"""The authorization server: authlib's core, adapted to FastAPI (authlib has Flask and Django
integrations only).

The adapter follows `authlib/integrations/flask_oauth2`: a `FormOAuth2Request` built from a
request whose form the route has already read (authlib is synchronous), and the six
methods authlib leaves to an integration. Each endpoint call runs in one database
transaction (`bound_session`), in a worker thread; the transaction commits even when the
answer is an OAuth error, because some errors must leave a trace: reusing a spent refresh
token or authorization code revokes its whole login.

Grants:
* client_credentials, for confidential clients (departments, property companies, owners'
  committees, residents' committees);
* authorization_code with PKCE (S256 only, required), for people through the login form;
* refresh_token with rotation: each use spends the token and issues a new one in the same
  family; presenting a spent one revokes the family (RFC 9700 section 4.14.2).

Access tokens are RFC 9068 JWTs signed with Ed25519 by the keyring (`api.oauth.keys`).

Mutual TLS (RFC 8705), which authlib does not have: a client may authenticate with its
certificate instead of a secret (`tls_client_auth` against a registered subject DN or SAN,
`self_signed_tls_client_auth` against registered thumbprints), and a client registered with
`tls_client_certificate_bound_access_tokens` gets tokens bound to the certificate it
presented (`cnf.x5t#S256`), which the resource server accepts only with that certificate.
The certificate comes from the request (`api.http.middleware.TransportSecurity`).

Client authentication fails in one way only: an unknown, revoked or public client, a wrong
secret or certificate all get the same `401 invalid_client`, after the same Argon2 work,
so no endpoint tells which client ids exist. Failures are limited per client
id and per address (`api.oauth.ratelimit`); over a limit, `429` with `Retry-After`.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import structlog
from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import (
    AccessDeniedError,
    InvalidClientError,
    InvalidRequestError,
    InvalidScopeError,
    JsonRequest,
    OAuth2Error,
    OAuth2Payload,
    OAuth2Request,
    grants,
)
from authlib.oauth2.rfc6749.util import extract_basic_authorization
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from starlette.datastructures import ImmutableMultiDict
from starlette.responses import Response

from access.runtime import Runtime
from api.http.settings import HttpSettings
from api.http.tls import PresentedCertificate
from api.oauth.config import OAuthSettings
from api.oauth.keys import TokenSigner
from api.oauth.models import (
    AuthorizationCode,
    OAuthClient,
    RefreshToken,
    RevokedAccessToken,
    TokenFamily,
)
from api.oauth.passwords import digest, password_needs_rehash, verify_password
from api.oauth.passwords import verify_client_secret as _verify_client_secret
from api.oauth.ratelimit import ClientAuthLimiter
from api.oauth.scopes import ROLE_SCOPES, Scope, scope_string
from api.oauth.tokens import (
    CNF_THUMBPRINT,
    USER_SUBJECT_PREFIX,
    InvalidToken,
    TokenVerifier,
    audiences,
    looks_like_jwt,
)
from audit import EntryDraft
from vault.accounts import User
from vault.models import new_id, utcnow
from vault.passwords import hash_password

log = structlog.get_logger(__name__)

SECRET_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
TLS_AUTH_METHODS = ["tls_client_auth", "self_signed_tls_client_auth"]
CONFIDENTIAL_AUTH_METHODS = [*SECRET_AUTH_METHODS, *TLS_AUTH_METHODS]
ALL_AUTH_METHODS = [*CONFIDENTIAL_AUTH_METHODS, "none"]

_SESSION: ContextVar[Session | None] = ContextVar("oauth_session", default=None)
# The certificate of the request being answered, for the token generator (authlib does not
# pass the request to it).
_PRESENTED: ContextVar[PresentedCertificate | None] = ContextVar("oauth_cert", default=None)


def current_session() -> Session:
    session = _SESSION.get()
    if session is None:
        raise RuntimeError("no database session is bound to this OAuth call")
    return session


@contextmanager
def bound_session(runtime: Runtime) -> Iterator[Session]:
    """One transaction for one endpoint call; authlib's callbacks find it here."""
    with runtime.transaction() as session:
        token = _SESSION.set(session)
        try:
            yield session
        finally:
            _SESSION.reset(token)


# -- the request adapter ---------------------------------------------------------------------


class FormPayload(OAuth2Payload):  # type: ignore[misc]
    """The parameters authlib reads: the query of a GET, the form body of a POST."""

    def __init__(self, data: ImmutableMultiDict[str, str]) -> None:
        self._data = data

    @property
    def data(self) -> ImmutableMultiDict[str, str]:
        return self._data

    @cached_property
    def datalist(self) -> defaultdict[str, list[str]]:
        values: defaultdict[str, list[str]] = defaultdict(list)
        for key, value in self._data.multi_items():
            values[key].append(value)
        return values


# What a URI may hold (RFC 3986: printable ASCII, without space, quote and backslash).
_URI_TEXT = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]*")
# What an error description may quote (RFC 6749 section 5.2); authlib raises ValueError on
# anything else, so the authorization request's values it may quote are checked first.
_DESCRIPTION_TEXT = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")
_QUOTED_PARAMETERS = ("response_type", "scope", "code_challenge_method", "client_id")


class FormOAuth2Request(OAuth2Request):  # type: ignore[misc]
    """An OAuth 2 request from Starlette, with its query and (already read) form.

    Modelled on authlib's FlaskOAuth2Request. `payload_from` says where the protocol
    parameters are: the form for the token, revocation and introspection endpoints, the
    query for the authorization endpoint (whose POST body is the login form).
    """

    def __init__(
        self,
        method: str,
        uri: str,
        headers: Mapping[str, str],
        args: ImmutableMultiDict[str, str],
        form: ImmutableMultiDict[str, str] | None = None,
        *,
        payload_from: str = "form",
        allow_http: bool = False,
        client_certificate: PresentedCertificate | None = None,
        client_address: str = "unknown",
    ) -> None:
        # authlib refuses plain http except on loopback; `allow_http` is for tests only.
        checked = urlunsplit(("https", *urlsplit(uri)[1:])) if allow_http else uri
        super().__init__(method=method, uri=checked, headers=headers)
        self.uri = uri
        # The certificate of the TLS connection (or the trusted proxy's), for RFC 8705.
        self.client_certificate = client_certificate
        # Where the request came from (the trusted proxy's X-Forwarded-For), for the limits.
        self.client_address = client_address
        self._args = args
        self._form = form if form is not None else ImmutableMultiDict()
        self.payload = FormPayload(self._form if payload_from == "form" else self._args)

    @property
    def args(self) -> ImmutableMultiDict[str, str]:
        return self._args

    @property
    def form(self) -> ImmutableMultiDict[str, str]:
        return self._form


# -- what authlib asks of clients, users and tokens --------------------------------------------


class Client:
    """authlib's ClientMixin over an `OAuthClient` row."""

    def __init__(self, row: OAuthClient) -> None:
        self.row = row

    @property
    def client_id(self) -> str:
        return self.row.client_id

    @property
    def display_name(self) -> str:
        return self.row.name or self.row.client_id

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> str | None:
        uris = self.row.redirect_uris
        return uris[0] if len(uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str | None:
        """The requested scope if the client may hold all of it; all of its own if none asked."""
        allowed = set(self.row.scopes)
        if not scope:
            return scope_string(allowed)
        requested = scope.split()
        if not set(requested) <= allowed:
            return None
        return scope_string(requested)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.row.redirect_uris  # exact match, no patterns

    def check_client_secret(self, client_secret: str) -> bool:
        return _verify_client_secret(self.row.secret_hash, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        """Only the way it was registered with: a secret (either way of sending it), or
        one of the mutual-TLS methods; never a secret for a certificate client."""
        if self.row.kind == "public":
            return method == "none"
        registered = self.row.token_endpoint_auth_method
        if registered is None:
            return method in SECRET_AUTH_METHODS
        return method == registered

    def certificate_authenticates(self, method: str, certificate: PresentedCertificate) -> bool:
        """RFC 8705 2.1.2 and 2.2.2: is this the certificate the client registered?"""
        row = self.row
        if method == "tls_client_auth":
            return certificate.matches(row.tls_client_auth_subject_dn, row.tls_client_auth_san)
        if method == "self_signed_tls_client_auth":
            return certificate.thumbprint in (row.tls_client_certificates or [])
        return False

    @property
    def certificate_bound(self) -> bool:
        return bool(self.row.tls_client_certificate_bound_access_tokens)

    def may_introspect(self, claims: Mapping[str, Any]) -> bool:
        """RFC 7662 section 4: only a client the access token is for (in its `aud`), the
        client it was issued to (which holds it anyway), or a resource server registered
        with the `introspect` scope may learn about it, and whom it names."""
        return (
            Scope.INTROSPECT.value in self.row.scopes
            or self.client_id in audiences(claims)
            or claims.get("client_id") == self.client_id
        )

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.row.grant_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.row.grant_types


@dataclass(frozen=True)
class Grantee:
    """The person a code or refresh token stands for, and the login (family) it belongs to."""

    user: User
    family_id: str

    def get_user_id(self) -> str:
        return self.user.id


@dataclass
class RefreshGrant:
    """authlib's TokenMixin over a refresh token and its family."""

    row: RefreshToken
    family: TokenFamily
    now: datetime = field(default_factory=utcnow)

    def check_client(self, client: Client) -> bool:
        return self.row.client_id == client.get_client_id()

    def get_scope(self) -> str:
        return self.row.scope

    def get_expires_in(self) -> int:
        return max(0, int((self.row.expires_at - self.now).total_seconds()))

    def is_expired(self) -> bool:
        return self.row.expires_at <= self.now or self.family.expires_at <= self.now

    def is_revoked(self) -> bool:
        return self.family.revoked_at is not None or self.row.rotated_at is not None


@dataclass
class AccessGrant:
    """One of our access tokens, as revocation and introspection see it."""

    claims: dict[str, Any]
    active: bool

    def check_client(self, client: Client) -> bool:
        return bool(self.claims.get("client_id") == client.get_client_id())

    def get_scope(self) -> str:
        return str(self.claims.get("scope", ""))

    def is_expired(self) -> bool:
        return not self.active

    def is_revoked(self) -> bool:
        return not self.active


# -- grants --------------------------------------------------------------------------------------


def _server(grant: Any) -> VaultAuthorizationServer:
    server: VaultAuthorizationServer = grant.server
    return server


def _mutual_tls_authentication(method: str) -> Any:
    """authlib's client-authentication function for one RFC 8705 method.

    The request names the client (`client_id`, section 2) and sends no secret; the
    connection's certificate must be the one registered. A failure is logged with the
    certificate's thumbprint (not personal data: it names a department's system).
    """

    def authenticate(query_client: Any, request: FormOAuth2Request) -> Client | None:
        client_id = request.payload.client_id
        if not client_id or request.form.get("client_secret"):
            return None
        if request.headers.get("authorization"):
            return None
        client: Client | None = query_client(client_id)
        if client is None or client.row.token_endpoint_auth_method != method:
            return None
        certificate = request.client_certificate
        if certificate is None:
            log.warning("oauth.mtls_refused", client=client_id, method=method, reason="no_cert")
            return None
        if not client.certificate_authenticates(method, certificate):
            log.warning(
                "oauth.mtls_refused",
                client=client_id,
                method=method,
                reason="wrong_cert",
                x5t_s256=certificate.thumbprint,
            )
            return None
        return client

    return authenticate


# -- client authentication: one answer to every failure, and limits --------------------------

CLIENT_AUTH_FAILED = (
    "Client authentication failed: unknown or revoked client, wrong secret or certificate, "
    "or a method the client is not registered for"
)
_LOGGED_ID_LENGTH = 64  # a presented client id is whatever the caller typed


def client_authentication_failed() -> InvalidClientError:
    """The answer to every failed client authentication, whatever the reason: 401 with
    `WWW-Authenticate: Basic` (RFC 6749 section 5.2), the same body and headers."""
    return InvalidClientError(status_code=401, description=CLIENT_AUTH_FAILED)


class TooManyFailedAuthentications(OAuth2Error):  # type: ignore[misc]
    """429 for a client id or an address over its limit of failures, with Retry-After.

    `temporarily_unavailable` is the registered OAuth error closest to "come back later";
    the status and Retry-After say the rest.
    """

    error = "temporarily_unavailable"
    status_code = 429

    def __init__(self, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(
            description="Too many failed client authentications. "
            f"Try again in {self.retry_after} seconds."
        )

    def get_headers(self) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = super().get_headers()
        headers.append(("Retry-After", str(self.retry_after)))
        return headers


def _basic_credentials(request: FormOAuth2Request) -> tuple[str | None, str | None]:
    try:
        client_id, secret = extract_basic_authorization(request.headers)
    except ValueError:  # credentials that are not UTF-8: no client
        return None, None
    return client_id or None, secret or None


def presented_client_id(request: FormOAuth2Request) -> str | None:
    """The client id a request claims, from HTTP Basic or the form; not yet checked."""
    basic_id, _ = _basic_credentials(request)
    return basic_id or request.form.get("client_id") or None


def _secret_authentication(where: str) -> Any:
    """authlib's client_secret_basic (`where="basic"`) or client_secret_post, without its
    "does not exist": an unknown or revoked client is checked against a dummy hash and
    fails exactly as a wrong secret does."""

    def authenticate(query_client: Any, request: FormOAuth2Request) -> Client | None:
        if where == "basic":
            client_id, secret = _basic_credentials(request)
        else:
            client_id, secret = request.form.get("client_id"), request.form.get("client_secret")
        if not client_id or not secret:
            return None
        client: Client | None = query_client(client_id)
        if client is None:
            _verify_client_secret(None, secret)
            return None
        return client if client.check_client_secret(secret) else None

    return authenticate


class ClientCredentialsGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = CONFIDENTIAL_AUTH_METHODS

    def validate_token_request(self) -> None:
        super().validate_token_request()
        client: Client = self.request.client
        if client.certificate_bound and self.request.client_certificate is None:
            # RFC 8705 3: the token is bound to the certificate of this very request.
            raise InvalidRequestError(
                "This client's tokens are bound to its certificate: call over mutual TLS"
            )


class S256CodeChallenge(CodeChallenge):  # type: ignore[misc]
    """PKCE with S256 only, and required of every authorization request (RFC 9700 2.1.1)."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]  # noqa: RUF012 - authlib's class attribute

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("Missing 'code_challenge': PKCE is required")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("Unsupported 'code_challenge_method': use S256")
        super().validate_code_challenge(grant, redirect_uri)


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ALL_AUTH_METHODS

    def create_authorization_response(self, redirect_uri: str, grant_user: Any) -> Any:
        if grant_user:
            # A person gets what the client asked for within what their role may hold.
            allowed = ROLE_SCOPES.get(grant_user.user.role, frozenset())
            granted = [s for s in str(self.request.scope or "").split() if s in allowed]
            if not granted:
                raise AccessDeniedError(
                    description="Nothing requested is open to this account",
                    redirect_uri=redirect_uri,
                )
            self.request.scope = scope_string(granted)
        return super().create_authorization_response(redirect_uri, grant_user)

    def save_authorization_code(self, code: str, request: Any) -> None:
        server = _server(self)
        now = utcnow()
        data = request.payload.data
        current_session().add(
            AuthorizationCode(
                code_hash=digest(code),
                client_id=request.client.get_client_id(),
                user_id=request.user.user.id,
                redirect_uri=request.payload.redirect_uri,
                scope=request.scope,
                code_challenge=data.get("code_challenge"),
                code_challenge_method=data.get("code_challenge_method"),
                family_id=new_id("lg"),
                created_at=now,
                expires_at=now + timedelta(seconds=server.settings.authorization_code_seconds),
            )
        )

    def query_authorization_code(self, code: str, client: Client) -> AuthorizationCode | None:
        """The code, claimed for this exchange; a second use revokes what the first gave."""
        session = current_session()
        row = session.get(AuthorizationCode, digest(code))
        if row is None or row.client_id != client.get_client_id():
            return None
        now = utcnow()
        claimed = session.execute(
            update(AuthorizationCode)
            .where(
                AuthorizationCode.code_hash == row.code_hash, AuthorizationCode.used_at.is_(None)
            )
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            _server(self).revoke_login(
                session, row.family_id, "code_reused", row.client_id, row.user_id
            )
            return None
        if row.expires_at <= now:
            return None
        return row

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        """Nothing to do: the code was spent when it was claimed, and is kept to spot reuse."""

    def authenticate_user(self, authorization_code: AuthorizationCode) -> Grantee | None:
        user = current_session().get(User, authorization_code.user_id)
        if user is None or user.disabled_at is not None:
            return None
        return Grantee(user, authorization_code.family_id)


class RefreshTokenGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ALL_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshGrant | None:
        session = current_session()
        row = session.get(RefreshToken, digest(refresh_token))
        if row is None:
            return None
        family = session.get(TokenFamily, row.family_id)
        now = utcnow()
        if family is None or family.revoked_at is not None or family.expires_at <= now:
            return None
        claimed = session.execute(
            update(RefreshToken)
            .where(RefreshToken.token_hash == row.token_hash, RefreshToken.rotated_at.is_(None))
            .values(rotated_at=now)
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            # A spent token came back: one of the two holders is not the owner.
            _server(self).revoke_login(
                session, row.family_id, "refresh_reused", row.client_id, row.user_id
            )
            return None
        if row.expires_at <= now:
            return None
        return RefreshGrant(row, family, now)

    def authenticate_user(self, refresh_token: RefreshGrant) -> Grantee | None:
        user = current_session().get(User, refresh_token.row.user_id)
        if user is None or user.disabled_at is not None:
            return None
        return Grantee(user, refresh_token.row.family_id)

    def issue_token(self, user: Grantee, refresh_token: RefreshGrant) -> dict[str, Any]:
        # Within the original grant (checked by authlib) and what the role holds today.
        scope = self.request.payload.scope or refresh_token.get_scope()
        allowed = ROLE_SCOPES.get(user.user.role, frozenset())
        granted = [s for s in scope.split() if s in allowed]
        if not granted:
            raise InvalidScopeError()
        token: dict[str, Any] = self.generate_token(
            user=user, scope=scope_string(granted), include_refresh_token=True
        )
        return token

    def revoke_old_credential(self, refresh_token: RefreshGrant) -> None:
        """Nothing to do: the token was spent when it was claimed."""


# -- revocation and introspection ----------------------------------------------------------------


class _TokenLookup:
    server: Any

    def query_token(
        self, token_string: str, token_type_hint: str | None
    ) -> AccessGrant | RefreshGrant | None:
        server: VaultAuthorizationServer = self.server
        if looks_like_jwt(token_string):
            return server.access_grant(token_string)
        return server.refresh_grant(token_string)


class TokenRevocation(_TokenLookup, RevocationEndpoint):  # type: ignore[misc]
    """RFC 7009. Public clients may revoke their own tokens (logout), with their client_id."""

    CLIENT_AUTH_METHODS = ALL_AUTH_METHODS

    def revoke_token(self, token: AccessGrant | RefreshGrant, request: Any) -> None:
        server: VaultAuthorizationServer = self.server
        session = current_session()
        if isinstance(token, RefreshGrant):
            # Revoking a refresh token ends the login, with its access tokens (RFC 7009 2.1).
            server.revoke_login(session, token.row.family_id, "revoked", None, None, audit=False)
            return
        claims = token.claims
        sid = claims.get("sid")
        if isinstance(sid, str):
            server.revoke_login(session, sid, "revoked", None, None, audit=False)
        jti = str(claims["jti"])
        if session.get(RevokedAccessToken, jti) is None:
            session.add(
                RevokedAccessToken(
                    jti=jti,
                    client_id=str(claims["client_id"]),
                    revoked_at=utcnow(),
                    expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
                )
            )


class TokenIntrospection(_TokenLookup, IntrospectionEndpoint):  # type: ignore[misc]
    """RFC 7662, for confidential clients only (resource servers); `cnf` shows a token's
    certificate binding (RFC 8705 3.2).

    A client may ask about an access token it was issued, one whose audience it is, or any
    if it holds the `introspect` scope; a refresh token only if it was issued it. Any other
    question gets `{"active": false}`, as for an unknown token, so nothing is revealed.
    """

    CLIENT_AUTH_METHODS = CONFIDENTIAL_AUTH_METHODS

    def check_permission(
        self, token: AccessGrant | RefreshGrant, client: Client, request: Any
    ) -> bool:
        if isinstance(token, RefreshGrant):
            allowed = token.check_client(client)
        else:
            allowed = client.may_introspect(token.claims)
        if not allowed:
            log.info("oauth.introspection_refused", client=client.client_id)
        return allowed

    def introspect_token(self, token: AccessGrant | RefreshGrant) -> dict[str, Any]:
        if isinstance(token, RefreshGrant):
            user = current_session().get(User, token.row.user_id)
            return {
                "active": True,
                "token_type": "refresh_token",
                "scope": token.row.scope,
                "client_id": token.row.client_id,
                "username": user.username if user else None,
                "exp": int(token.row.expires_at.timestamp()),
                "iat": int(token.row.issued_at.timestamp()),
            }
        claims = token.claims
        body: dict[str, Any] = {
            name: claims[name]
            for name in (
                "scope",
                "client_id",
                "exp",
                "iat",
                "sub",
                "aud",
                "iss",
                "jti",
                "org",
                "role",
                "cnf",
            )
            if name in claims
        }
        sub = str(claims.get("sub", ""))
        if sub.startswith(USER_SUBJECT_PREFIX):
            body["username"] = sub.removeprefix(USER_SUBJECT_PREFIX)
        return {"active": True, "token_type": "Bearer", **body}


# -- tokens ----------------------------------------------------------------------------------------


class AccessTokenGenerator(BearerTokenGenerator):  # type: ignore[misc]
    """RFC 9068 access tokens, signed by the keyring; opaque random refresh tokens."""

    def __init__(self, server: VaultAuthorizationServer) -> None:
        super().__init__(self._access_token, self._refresh_token, self._expires_in)
        self.server = server

    def _expires_in(self, client: Client, grant_type: str) -> int:
        return self.server.settings.access_token_seconds

    @staticmethod
    def _refresh_token(**_: Any) -> str:
        return secrets.token_urlsafe(32)

    def _access_token(
        self, client: Client, grant_type: str, user: Grantee | None, scope: str
    ) -> str:
        settings = self.server.settings
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": settings.resolved_issuer,
            "sub": client.get_client_id(),
            "aud": settings.resolved_audience,
            "client_id": client.get_client_id(),
            "scope": scope,
            "iat": now,
            "exp": now + settings.access_token_seconds,
            "jti": secrets.token_urlsafe(16),
        }
        if client.certificate_bound:
            presented = _PRESENTED.get()
            if presented is None:  # refused by the grant already; never issue it unbound
                raise InvalidRequestError("No client certificate to bind the token to")
            claims["cnf"] = {CNF_THUMBPRINT: presented.thumbprint}
        if user is None:
            if client.row.organisation_id:
                claims["org"] = client.row.organisation_id
        else:
            claims["sub"] = f"{USER_SUBJECT_PREFIX}{user.user.username}"
            claims["role"] = user.user.role
            claims["sid"] = user.family_id
            if user.user.organisation_id:
                claims["org"] = user.user.organisation_id
        return self.server.signer.sign(current_session(), claims)


# -- the server ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthorizationPrompt:
    """A valid authorization request, waiting for the person to log in."""

    client_id: str
    client_name: str
    first_party: bool
    scopes: list[str]
    redirect_uri: str


@dataclass(frozen=True)
class AuthorizationRefused:
    """An authorization request that cannot go back to its client (bad client or redirect)."""

    error: str
    description: str


@dataclass(frozen=True)
class LoginFailed:
    prompt: AuthorizationPrompt


AuthorizationStep = AuthorizationPrompt | AuthorizationRefused | LoginFailed | Response


class VaultAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    def __init__(
        self,
        runtime: Runtime,
        settings: OAuthSettings,
        verifier: TokenVerifier,
        transport: HttpSettings,
    ) -> None:
        super().__init__(scopes_supported=[s.value for s in Scope])
        self.runtime = runtime
        self.settings = settings
        self.transport = transport
        self.verifier = verifier
        self.signer = TokenSigner(runtime.vault.keyring)
        self.register_token_generator("default", AccessTokenGenerator(self))
        self.register_grant(ClientCredentialsGrant)
        self.register_grant(AuthorizationCodeGrant, [S256CodeChallenge(required=True)])
        self.register_grant(RefreshTokenGrant)
        self.register_endpoint(TokenRevocation)
        self.register_endpoint(TokenIntrospection)
        for method in TLS_AUTH_METHODS:
            self.register_client_auth_method(method, _mutual_tls_authentication(method))
        self.register_client_auth_method("client_secret_basic", _secret_authentication("basic"))
        self.register_client_auth_method("client_secret_post", _secret_authentication("post"))
        self.client_limiter = ClientAuthLimiter(
            settings.client_auth_max_failures,
            settings.client_auth_address_max_failures,
            settings.client_auth_window_seconds,
        )

    def authenticate_client(
        self, request: FormOAuth2Request, methods: list[str], endpoint: str = "token"
    ) -> Client:
        """authlib's client authentication, limited, with one answer to every failure."""
        client_id = presented_client_id(request)
        address = request.client_address
        limiter = self.client_limiter
        wait = limiter.retry_after(client_id, address)
        if wait > 0:  # refused before any secret is checked, even a right one
            raise TooManyFailedAuthentications(wait)
        try:
            client: Client = super().authenticate_client(request, methods, endpoint)
        except InvalidClientError:
            limiter.failed(client_id, address)
            logged = client_id[:_LOGGED_ID_LENGTH] if client_id else None
            log.warning(
                "oauth.client_auth_failed", client=logged, address=address, endpoint=endpoint
            )
            wait = limiter.retry_after(client_id, address)
            if wait > 0:  # logged once, when the limit is reached, not on each refusal
                log.warning(
                    "oauth.client_auth_limited",
                    client=logged,
                    address=address,
                    retry_after=math.ceil(wait),
                )
            raise client_authentication_failed() from None
        limiter.succeeded(client.client_id)
        return client

    # -- the six methods authlib leaves to an integration ------------------------------------

    def query_client(self, client_id: str) -> Client | None:
        row = current_session().get(OAuthClient, client_id)
        if row is None or row.revoked_at is not None:
            return None
        return Client(row)

    def save_token(self, token: Mapping[str, Any], request: Any) -> None:
        session = current_session()
        grantee: Grantee | None = request.user
        client: Client = request.client
        if grantee is not None:
            now = utcnow()
            family = session.get(TokenFamily, grantee.family_id)
            if family is None:  # the code exchange that starts a login
                family = TokenFamily(
                    id=grantee.family_id,
                    client_id=client.client_id,
                    user_id=grantee.user.id,
                    created_at=now,
                    expires_at=now + timedelta(seconds=self.settings.refresh_token_seconds),
                )
                session.add(family)
                session.flush()
            if "refresh_token" in token:
                session.add(
                    RefreshToken(
                        token_hash=digest(token["refresh_token"]),
                        family_id=family.id,
                        client_id=client.client_id,
                        user_id=grantee.user.id,
                        scope=token.get("scope", ""),
                        issued_at=now,
                        expires_at=family.expires_at,
                    )
                )
        log.info(
            "oauth.token_issued",
            client=client.client_id,
            grant_type=request.payload.grant_type,
            user=grantee.user.username if grantee else None,
            scope=token.get("scope"),
        )

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        if name == "after_revoke_token":
            client = kwargs.get("client")
            log.info("oauth.token_revoked", client=client.client_id if client else None)

    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        if isinstance(request, OAuth2Request):
            return request
        raise TypeError("build a FormOAuth2Request from the Starlette request first")

    def create_json_request(self, request: Any) -> JsonRequest:
        if isinstance(request, JsonRequest):
            return request
        raise TypeError("no JSON endpoints: every OAuth endpoint here takes a form")

    def handle_response(self, status_code: int, payload: Any, headers: Any) -> Response:
        body = json.dumps(payload) if isinstance(payload, dict) else (payload or "")
        response = Response(body, status_code=status_code)
        for name, value in headers:
            response.headers[name] = value
        return response

    # -- helpers the grants and endpoints share ------------------------------------------------

    def revoke_login(
        self,
        session: Session,
        family_id: str,
        reason: str,
        client_id: str | None,
        user_id: str | None,
        *,
        audit: bool = True,
    ) -> None:
        """End a login: its refresh tokens and the access tokens that name it (`sid`)."""
        result = session.execute(
            update(TokenFamily)
            .where(TokenFamily.id == family_id, TokenFamily.revoked_at.is_(None))
            .values(revoked_at=utcnow(), revoked_reason=reason)
            .execution_options(synchronize_session=False)
        )
        if not audit:
            return
        user = session.get(User, user_id) if user_id else None
        log.warning("oauth.token_reuse", reason=reason, client=client_id, family=family_id)
        self.runtime.audit.record(
            session,
            [
                EntryDraft(
                    action=f"oauth.{reason}",
                    outcome="denied",
                    channel="api",
                    kind="event",
                    client=client_id,
                    user=user.username if user else None,
                    reason="a spent credential was presented again; the login was revoked",
                    details={
                        "family": family_id,
                        "revoked": bool(result.rowcount),  # type: ignore[attr-defined]
                    },
                )
            ],
        )

    def access_grant(self, token: str) -> AccessGrant | None:
        """One of our access tokens (signature checked), active or not; None if not ours."""
        try:
            claims = self.verifier.own_claims(token, check_expiry=False)
        except InvalidToken:
            return None
        try:
            # Active means valid and not revoked; a bound token's certificate is not here to
            # check (the asker is a resource server), so `cnf` goes back for it to check.
            self.verifier.verify(token, check_binding=False)
        except InvalidToken:
            return AccessGrant(claims, active=False)
        return AccessGrant(claims, active=True)

    def refresh_grant(self, token: str) -> RefreshGrant | None:
        session = current_session()
        row = session.get(RefreshToken, digest(token))
        if row is None:
            return None
        family = session.get(TokenFamily, row.family_id)
        return RefreshGrant(row, family) if family is not None else None

    def authenticate_person(self, username: str, password: str) -> User | None:
        """Check a password; an unknown user costs the same time as a known one."""
        session = current_session()
        user = session.scalars(
            select(User).where(User.username == username.strip().lower())
        ).first()
        if not verify_password(user.password_hash if user else None, password):
            return None
        if user is None or user.disabled_at is not None:
            return None
        if password_needs_rehash(user.password_hash):
            user.password_hash = hash_password(password)
        return user

    # -- endpoint calls, each in one transaction (run them in a worker thread) ------------------

    def token_response(self, request: FormOAuth2Request) -> Response:
        presented = _PRESENTED.set(request.client_certificate)
        try:
            with bound_session(self.runtime):
                response: Response = self.create_token_response(request)
                return response
        finally:
            _PRESENTED.reset(presented)

    def revocation_response(self, request: FormOAuth2Request) -> Response:
        with bound_session(self.runtime):
            response: Response = self.create_endpoint_response("revocation", request)
            return response

    def introspection_response(self, request: FormOAuth2Request) -> Response:
        with bound_session(self.runtime):
            response: Response = self.create_endpoint_response("introspection", request)
            return response

    def _consent_grant(self, request: FormOAuth2Request) -> Any:
        redirect = request._args.get("redirect_uri")
        if redirect is not None and not _URI_TEXT.fullmatch(redirect):
            # No registered redirect URI holds such characters, and authlib would quote it in
            # an error description, which must be printable ASCII (RFC 6749 section 5.2).
            return AuthorizationRefused("invalid_request", "redirect_uri is not a URI")
        for name in _QUOTED_PARAMETERS:
            value = request._args.get(name)
            if value is not None and not _DESCRIPTION_TEXT.fullmatch(value):
                return AuthorizationRefused("invalid_request", f"{name} is not a valid value")
        try:
            grant = self.get_consent_grant(request, end_user=None)
        except OAuth2Error as error:
            if error.redirect_uri:
                response: Response = self.handle_error_response(request, error)
                return response
            return AuthorizationRefused(str(error.error), str(error.get_error_description() or ""))
        return grant

    @staticmethod
    def _prompt(grant: Any) -> AuthorizationPrompt:
        client: Client = grant.request.client
        return AuthorizationPrompt(
            client_id=client.client_id,
            client_name=client.display_name,
            first_party=client.row.first_party,
            scopes=str(grant.request.scope or "").split(),
            redirect_uri=str(grant.redirect_uri),
        )

    def check_authorization(self, request: FormOAuth2Request) -> AuthorizationStep:
        """The login form's GET: is this a request we can show a form for?"""
        with bound_session(self.runtime):
            grant = self._consent_grant(request)
            if isinstance(grant, AuthorizationRefused | Response):
                return grant
            return self._prompt(grant)

    def complete_authorization(
        self, request: FormOAuth2Request, username: str, password: str, *, approve: bool
    ) -> AuthorizationStep:
        """The login form's POST: check the person, then redirect with a code (or an error)."""
        with bound_session(self.runtime):
            grant = self._consent_grant(request)
            if isinstance(grant, AuthorizationRefused | Response):
                return grant
            grantee: Grantee | None = None
            if approve:
                user = self.authenticate_person(username, password)
                if user is None:
                    return LoginFailed(self._prompt(grant))
                grantee = Grantee(user, "")  # the code gets its login's id when saved
                log.info("oauth.login", user=user.username, client=grant.request.client.client_id)
            response: Response = self.create_authorization_response(
                request, grant_user=grantee, grant=grant
            )
            return response

    @property
    def mutual_tls(self) -> bool:
        """Can a client certificate reach us: asked for by our TLS, or forwarded by a proxy?"""
        transport = self.transport
        return transport.tls_client_auth != "none" or bool(transport.client_cert_header)

    def metadata(self) -> dict[str, Any]:
        """RFC 8414 authorization server metadata, with RFC 8705's when mutual TLS is on."""
        s = self.settings
        methods = ALL_AUTH_METHODS if self.mutual_tls else [*SECRET_AUTH_METHODS, "none"]
        document: dict[str, Any] = {
            "issuer": s.resolved_issuer,
            "authorization_endpoint": s.endpoint("/oauth/authorize"),
            "token_endpoint": s.endpoint("/oauth/token"),
            "jwks_uri": s.endpoint("/oauth/jwks"),
            "revocation_endpoint": s.endpoint("/oauth/revoke"),
            "introspection_endpoint": s.endpoint("/oauth/introspect"),
            "scopes_supported": [sc.value for sc in Scope],
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
            "token_endpoint_auth_methods_supported": methods,
            "revocation_endpoint_auth_methods_supported": methods,
            "introspection_endpoint_auth_methods_supported": [m for m in methods if m != "none"],
            "code_challenge_methods_supported": ["S256"],
            "ui_locales_supported": ["zh-CN", "en"],
        }
        if self.mutual_tls:
            # RFC 8705 3.3 and 5: where clients use their certificates (here, or on the host
            # a proxy asks for them on), and that tokens can be bound to them.
            document["tls_client_certificate_bound_access_tokens"] = True
            document["mtls_endpoint_aliases"] = {
                "token_endpoint": s.mtls_endpoint("/oauth/token"),
                "revocation_endpoint": s.mtls_endpoint("/oauth/revoke"),
                "introspection_endpoint": s.mtls_endpoint("/oauth/introspect"),
            }
        return document
