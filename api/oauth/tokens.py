"""Bearer tokens on the way in: who is calling, checked on every request.

`TokenVerifier.verify` accepts our own RFC 9068 access tokens and those of configured
external OpenID Connect issuers, and turns either into a `Principal`. For our tokens it
also asks the database, in one round trip, whether the token was revoked (RFC 7009), the
client revoked, the login ended or the user disabled, so a revocation takes effect on the
next request.

A token bound to a client certificate (RFC 8705 `cnf.x5t#S256`, ours or an external
issuer's) is accepted only from a request presenting that same certificate: a stolen token
is useless without the certificate's private key.

`require_scopes(...)` is the FastAPI dependency routes use. It fails with `AuthError`,
which `install_auth_handlers` turns into RFC 9457 problems with `WWW-Authenticate`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from joserfc import jwt
from joserfc.errors import BadSignatureError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from api.http.middleware import client_certificate
from api.http.problems import problem
from api.http.tls import PresentedCertificate
from api.oauth.config import ExternalIssuer, OAuthSettings
from api.oauth.keys import ACCEPTED_ALGORITHMS, ACCESS_TOKEN_TYPE
from api.oauth.models import OAuthClient, RevokedAccessToken, TokenFamily, TokenSigningKey
from api.oauth.scopes import Scope
from vault.accounts import ROLES, User
from vault.stamps import StampedCache, Stamps

log = structlog.get_logger(__name__)

MAX_TOKEN_LENGTH = 8192
CNF_THUMBPRINT = "x5t#S256"  # RFC 8705 3.1: the confirmation member naming a certificate
USER_SUBJECT_PREFIX = "user:"
REALM = "resident-vault"
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
_KNOWN_SCOPES = frozenset(s.value for s in Scope)


@dataclass(frozen=True)
class Principal:
    """The verified caller.

    * An organisation's system (client credentials): `subject` and `client_id` are the
      client id, `organisation` its organisation; no username, role or resident.
    * A person who logged in here: `subject` is `user:<username>`, `client_id` the page's
      client; `role` and `organisation` come from the token, `resident_id` from the
      database (residents only). `session_id` names the login (refresh-token family).
    * A person from an external issuer: `subject` is `ext:<issuer name>:<sub>`, the other
      fields from its claims as configured; `issuer` tells the two apart.
    """

    subject: str
    client_id: str
    username: str | None
    role: str | None
    organisation: str | None
    resident_id: str | None
    scopes: frozenset[str]
    jti: str
    expires_at: datetime
    token_id: str
    issuer: str = ""
    session_id: str | None = None
    external: bool = False
    # RFC 8705: the x5t#S256 of the certificate the token is bound to, if it is.
    certificate_thumbprint: str | None = None

    @property
    def is_person(self) -> bool:
        return self.username is not None


class InvalidToken(Exception):
    """The token cannot be used: `reason` is a short, safe-to-show code."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- decoding ----------------------------------------------------------------------------------


def _b64decode(part: str) -> bytes:
    if not _B64URL.match(part):
        raise InvalidToken("malformed")
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("malformed") from None


def _json_object(part: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64decode(part))
    except (UnicodeDecodeError, ValueError):
        raise InvalidToken("malformed") from None
    if not isinstance(value, dict):
        raise InvalidToken("malformed")
    return value


# Verified tokens kept in memory: about 1.5 KB each.
VERIFIED_TOKENS_KEPT = 10_000


def split_token(token: str) -> tuple[dict[str, Any], dict[str, Any], str, bytes]:
    """Header, unverified claims, signing input and signature of a compact JWS."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("malformed")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("malformed")
    header, claims = _json_object(parts[0]), _json_object(parts[1])
    return header, claims, f"{parts[0]}.{parts[1]}", _b64decode(parts[2])


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


def audiences(claims: Mapping[str, Any]) -> list[str]:
    """A token's `aud`, which RFC 7519 allows as one string or a list, as a list."""
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list) and all(isinstance(a, str) for a in aud):
        return aud
    return []


def _int_claim(claims: Mapping[str, Any], name: str, *, required: bool) -> int | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise InvalidToken(f"missing {name}")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidToken(f"invalid {name}")
    return int(value)


def check_times(claims: Mapping[str, Any], now: float, leeway: int) -> int:
    """Checks exp (required), nbf and iat; returns exp."""
    exp = _int_claim(claims, "exp", required=True)
    assert exp is not None  # noqa: S101 - required above; for the type checker
    if now >= exp + leeway:
        raise InvalidToken("expired")
    nbf = _int_claim(claims, "nbf", required=False)
    if nbf is not None and now + leeway < nbf:
        raise InvalidToken("not yet valid")
    iat = _int_claim(claims, "iat", required=False)
    if iat is not None and now + leeway < iat:
        raise InvalidToken("issued in the future")
    return exp


def bound_thumbprint(claims: Mapping[str, Any]) -> str | None:
    """The certificate a token is bound to (`cnf.x5t#S256`); InvalidToken if `cnf` is there
    but unreadable, since ignoring a confirmation we cannot read would unbind the token."""
    cnf = claims.get("cnf")
    if cnf is None:
        return None
    value = cnf.get(CNF_THUMBPRINT) if isinstance(cnf, dict) else None
    if not isinstance(value, str) or not value:
        raise InvalidToken("unsupported confirmation")
    return value


def _string(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidToken(f"missing {name}")
    return value


# -- our own tokens ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _PublishedKey:
    key: Ed25519PublicKey
    expires_after: datetime | None


class _OwnKeys:
    """Public token keys from the database, cached; reloaded when an unknown kid appears."""

    RELOAD_EVERY = 60.0
    MIN_RELOAD_GAP = 1.0

    def __init__(self, sessions: sessionmaker[Session], clock: Callable[[], float]) -> None:
        self._sessions = sessions
        self._clock = clock
        self._keys: dict[str, _PublishedKey] = {}
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def _load(self) -> None:
        with self._sessions() as session:
            rows = session.scalars(select(TokenSigningKey)).all()
            self._keys = {
                r.kid: _PublishedKey(
                    Ed25519PublicKey.from_public_bytes(r.public_key), r.expires_after
                )
                for r in rows
                if r.algorithm in ACCEPTED_ALGORITHMS  # keys made as "EdDSA" too
            }
        self._loaded_at = self._clock()

    def get(self, kid: str) -> _PublishedKey | None:
        with self._lock:
            age = self._clock() - self._loaded_at
            if age > self.RELOAD_EVERY or (kid not in self._keys and age > self.MIN_RELOAD_GAP):
                self._load()
            return self._keys.get(kid)

    def forget(self) -> None:
        with self._lock:
            self._loaded_at = float("-inf")


@dataclass(frozen=True)
class _State:
    revoked: bool
    client_created_at: datetime | None
    client_revoked_at: datetime | None
    family_revoked_at: datetime | None
    user_id: str | None
    user_disabled_at: datetime | None
    resident_id: str | None


# -- external issuers --------------------------------------------------------------------------


class ExternalVerifier:
    """Access tokens of one configured OpenID Connect issuer, checked with its JWKS."""

    MIN_REFETCH_GAP = 30.0

    def __init__(
        self,
        config: ExternalIssuer,
        default_audience: str,
        leeway: int,
        clock: Callable[[], float],
        fetch: Callable[[str], Mapping[str, Any]] | None = None,
    ) -> None:
        self.config = config
        self.audience = config.audience or default_audience
        self._leeway = leeway
        self._clock = clock
        self._fetch = fetch or _fetch_jwks
        self._keys: KeySet | None = None
        self._fetched_at = float("-inf")
        self._lock = threading.Lock()

    def _keyset(self, *, refresh: bool = False) -> KeySet:
        with self._lock:
            if self.config.jwks is not None:
                if self._keys is None:
                    self._keys = KeySet.import_key_set(self.config.jwks)  # type: ignore[arg-type]
                return self._keys
            age = self._clock() - self._fetched_at
            stale = age > self.config.jwks_cache_seconds
            if self._keys is None or stale or (refresh and age > self.MIN_REFETCH_GAP):
                assert self.config.jwks_url is not None  # noqa: S101 - checked by the config
                try:
                    document = self._fetch(self.config.jwks_url)
                    self._keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
                    self._fetched_at = self._clock()
                except (httpx.HTTPError, JoseError, ValueError, TypeError) as exc:
                    log.warning(
                        "oauth.external_jwks_failed",
                        issuer=self.config.name,
                        error=type(exc).__name__,
                    )
                    if self._keys is None:
                        raise InvalidToken("issuer keys unavailable") from None
            return self._keys

    def verify(self, token: str, header: Mapping[str, Any]) -> Principal:
        cfg = self.config
        if header.get("alg") not in cfg.algorithms:
            raise InvalidToken("unsupported algorithm")
        try:
            try:
                decoded = jwt.decode(token, self._keyset(), algorithms=cfg.algorithms)
            except InvalidKeyIdError:
                decoded = jwt.decode(token, self._keyset(refresh=True), algorithms=cfg.algorithms)
        except InvalidKeyIdError:
            raise InvalidToken("unknown key") from None
        except BadSignatureError:
            raise InvalidToken("bad signature") from None
        except JoseError:
            raise InvalidToken("malformed") from None
        claims = decoded.claims
        if claims.get("iss") != cfg.issuer:
            raise InvalidToken("wrong issuer")
        if self.audience not in audiences(claims):
            raise InvalidToken("wrong audience")
        exp = check_times(claims, self._clock(), self._leeway)
        subject = _string(claims, "sub")
        raw_username = claims.get(cfg.username_claim)
        username = (
            f"{cfg.username_prefix}{raw_username}"
            if isinstance(raw_username, str) and raw_username
            else None
        )
        role = _mapped_role(cfg, claims) if username else None
        jti = claims.get("jti") if isinstance(claims.get("jti"), str) else None
        digest = hashlib.sha256(token.encode()).hexdigest()[:32]
        client_id = claims.get("client_id") or claims.get("azp") or cfg.name
        return Principal(
            subject=f"ext:{cfg.name}:{subject}",
            client_id=str(client_id),
            username=username,
            role=role,
            organisation=_optional_claim(claims, cfg.organisation_claim),
            resident_id=_optional_claim(claims, cfg.resident_id_claim) if username else None,
            scopes=_external_scopes(cfg, claims),
            jti=jti or digest,
            expires_at=datetime.fromtimestamp(exp, UTC),
            token_id=f"{cfg.name}:{jti or digest}",
            issuer=cfg.issuer,
            external=True,
            certificate_thumbprint=bound_thumbprint(claims),
        )


def _fetch_jwks(url: str) -> Mapping[str, Any]:
    response = httpx.get(url, timeout=5.0, follow_redirects=False)
    response.raise_for_status()
    document = response.json()
    if not isinstance(document, dict):
        raise ValueError("a JWKS is a JSON object")
    return document


def _optional_claim(claims: Mapping[str, Any], name: str | None) -> str | None:
    if name is None:
        return None
    value = claims.get(name)
    return value if isinstance(value, str) and value else None


def _mapped_role(cfg: ExternalIssuer, claims: Mapping[str, Any]) -> str | None:
    value = _optional_claim(claims, cfg.role_claim)
    if value is None:
        return None
    role = cfg.role_map.get(value, value)
    if role not in ROLES:
        raise InvalidToken("unknown role")
    return role


def _external_scopes(cfg: ExternalIssuer, claims: Mapping[str, Any]) -> frozenset[str]:
    raw = claims.get(cfg.scope_claim)
    if isinstance(raw, str):
        names = raw.split()
    elif isinstance(raw, list):
        names = [s for s in raw if isinstance(s, str)]
    else:
        names = []
    allowed = _KNOWN_SCOPES if cfg.allowed_scopes is None else {s.value for s in cfg.allowed_scopes}
    return frozenset(n for n in names if n in allowed)


# -- the verifier --------------------------------------------------------------------------------


class TokenVerifier:
    """Checks bearer tokens: ours (RFC 9068, Ed25519) and those of configured external issuers."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: OAuthSettings,
        *,
        clock: Callable[[], float] = time.time,
        fetch_jwks: Callable[[str], Mapping[str, Any]] | None = None,
        stamps: Stamps | None = None,
    ) -> None:
        self.settings = settings
        self.issuer = settings.resolved_issuer
        self.audience = settings.resolved_audience
        self.clock = clock
        self._sessions = sessions
        self._keys = _OwnKeys(sessions, self.now)
        # A token's revocation state, good for as long as the change stamp stays put.
        self._stamps = stamps or Stamps(sessions.kw["bind"])
        self._states: StampedCache[tuple[str, str, str | None, str | None], _State] = StampedCache()
        # Tokens whose signature, issuer and audience were checked: (kid, claims) by the
        # exact token. A hit still checks the key is published and the times hold.
        self._verified: OrderedDict[str, tuple[str, dict[str, Any]]] = OrderedDict()
        self._verified_lock = threading.Lock()
        self._external = {
            cfg.issuer: ExternalVerifier(
                cfg, self.audience, settings.clock_leeway_seconds, self.now, fetch_jwks
            )
            for cfg in settings.external_issuers
        }

    def now(self) -> float:
        """The verifier's clock (replaceable, for tests of expiry)."""
        return self.clock()

    def verify(
        self,
        bearer: str,
        certificate: PresentedCertificate | None = None,
        *,
        check_binding: bool = True,
    ) -> Principal:
        """The caller named by a bearer token; raises InvalidToken with the reason.

        `certificate` is the one the request came with; a certificate-bound token is
        refused without it, or with any other. Introspection alone passes
        `check_binding=False`: it answers a resource server about a token that server
        received, and reports the binding in `cnf` for it to check (RFC 8705 3.2).
        """
        token = bearer.strip()
        own = self._verified_before(token)
        if own is None:
            header, claims, _, _ = split_token(token)
            issuer = claims.get("iss")
            if issuer == self.issuer:
                own = self.own_claims(token)
                self._remember(str(header.get("kid")), token, own)
        if own is not None:
            principal = self._principal(own, self._state(own))
        else:
            external = self._external.get(issuer) if isinstance(issuer, str) else None
            if external is None:
                raise InvalidToken("unknown issuer")
            principal = external.verify(token, header)
        bound = principal.certificate_thumbprint
        if bound is not None and check_binding:
            if certificate is None:
                raise InvalidToken("certificate-bound token without its certificate")
            if not secrets.compare_digest(bound, certificate.thumbprint):
                raise InvalidToken("certificate-bound token with another certificate")
        return principal

    def checks_locally(self, token: str) -> bool:
        """Whether checking this token needs nothing beyond our own database (our tokens,
        and anything malformed); an external issuer's may need its key set fetched."""
        token = token.strip()
        with self._verified_lock:
            if token in self._verified:
                return True
        try:
            issuer = split_token(token)[1].get("iss")
        except InvalidToken:
            return True
        return not (isinstance(issuer, str) and issuer in self._external)

    def _verified_before(self, token: str) -> dict[str, Any] | None:
        """The claims of a token of ours verified before, if its key is still published and
        its times still hold (InvalidToken if they no longer do); None if not seen."""
        with self._verified_lock:
            seen = self._verified.get(token)
            if seen is not None:
                self._verified.move_to_end(token)
        if seen is None:
            return None
        kid, claims = seen
        published = self._keys.get(kid)
        now = self.clock()
        if published is None or (
            published.expires_after is not None and now > published.expires_after.timestamp()
        ):
            raise InvalidToken("unknown key")
        check_times(claims, now, self.settings.clock_leeway_seconds)
        return claims

    def _remember(self, kid: str, token: str, claims: dict[str, Any]) -> None:
        with self._verified_lock:
            self._verified[token] = (kid, claims)
            while len(self._verified) > VERIFIED_TOKENS_KEPT:
                self._verified.popitem(last=False)

    def own_claims(self, token: str, *, check_expiry: bool = True) -> dict[str, Any]:
        """Claims of one of our access tokens, after its signature, issuer and audience."""
        header, claims, signing_input, signature = split_token(token.strip())
        # Ed25519 (RFC 9864), or EdDSA on a token issued before the rename.
        if header.get("alg") not in ACCEPTED_ALGORITHMS:
            raise InvalidToken("unsupported algorithm")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in (
            ACCESS_TOKEN_TYPE,
            f"application/{ACCESS_TOKEN_TYPE}",
        ):
            raise InvalidToken("not an access token")
        kid = header.get("kid")
        published = self._keys.get(kid) if isinstance(kid, str) else None
        now = self.clock()
        if published is None or (
            published.expires_after is not None and now > published.expires_after.timestamp()
        ):
            raise InvalidToken("unknown key")
        try:
            published.key.verify(signature, signing_input.encode("ascii"))
        except InvalidSignature:
            raise InvalidToken("bad signature") from None
        if claims.get("iss") != self.issuer:
            raise InvalidToken("wrong issuer")
        if self.audience not in audiences(claims):
            raise InvalidToken("wrong audience")
        if check_expiry:
            check_times(claims, now, self.settings.clock_leeway_seconds)
        for name in ("sub", "client_id", "jti"):
            _string(claims, name)
        if not isinstance(claims.get("scope"), str):
            raise InvalidToken("missing scope")
        return claims

    def _state(self, claims: Mapping[str, Any]) -> _State:
        """Whether the token, its client, its login or its user was revoked: from the
        database, or as last read under the same change stamp."""
        sid = claims.get("sid") if isinstance(claims.get("sid"), str) else None
        key = (str(claims["jti"]), str(claims["client_id"]), str(claims["sub"]), sid)
        return self._states.lookup(key, self._stamps.current(), lambda: self._read_state(claims))

    def _read_state(self, claims: Mapping[str, Any]) -> _State:
        sub = str(claims["sub"])
        username = (
            sub.removeprefix(USER_SUBJECT_PREFIX) if sub.startswith(USER_SUBJECT_PREFIX) else None
        )
        client_id = str(claims["client_id"])
        sid = claims.get("sid") if isinstance(claims.get("sid"), str) else None

        def user_column(column: Any) -> Any:
            return select(column).where(User.username == username).scalar_subquery()

        query = select(
            select(RevokedAccessToken.jti)
            .where(RevokedAccessToken.jti == str(claims["jti"]))
            .scalar_subquery(),
            select(OAuthClient.created_at)
            .where(OAuthClient.client_id == client_id)
            .scalar_subquery(),
            select(OAuthClient.revoked_at)
            .where(OAuthClient.client_id == client_id)
            .scalar_subquery(),
            select(TokenFamily.revoked_at).where(TokenFamily.id == sid).scalar_subquery(),
            user_column(User.id),
            user_column(User.disabled_at),
            user_column(User.resident_id),
        )
        with self._sessions() as session:
            row = session.execute(query).one()
        return _State(
            revoked=row[0] is not None,
            client_created_at=row[1],
            client_revoked_at=row[2],
            family_revoked_at=row[3],
            user_id=row[4],
            user_disabled_at=row[5],
            resident_id=row[6],
        )

    def _principal(self, claims: Mapping[str, Any], state: _State) -> Principal:
        if state.revoked:
            raise InvalidToken("revoked")
        if state.client_created_at is None or state.client_revoked_at is not None:
            raise InvalidToken("client revoked")
        if state.family_revoked_at is not None:
            raise InvalidToken("revoked")
        sub = str(claims["sub"])
        username: str | None = None
        if sub.startswith(USER_SUBJECT_PREFIX):
            username = sub.removeprefix(USER_SUBJECT_PREFIX)
            if state.user_id is None or state.user_disabled_at is not None:
                raise InvalidToken("user disabled")
        role = claims.get("role") if username else None
        organisation = claims.get("org")
        jti = str(claims["jti"])
        return Principal(
            subject=sub,
            client_id=str(claims["client_id"]),
            username=username,
            role=role if isinstance(role, str) else None,
            organisation=organisation if isinstance(organisation, str) else None,
            resident_id=state.resident_id if username else None,
            scopes=frozenset(str(claims["scope"]).split()),
            jti=jti,
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
            token_id=jti,
            issuer=self.issuer,
            session_id=claims.get("sid") if isinstance(claims.get("sid"), str) else None,
            certificate_thumbprint=bound_thumbprint(claims),
        )

    def forget_keys(self) -> None:
        """Reload the published keys on the next check (after a rotation in this process)."""
        self._keys.forget()


# -- FastAPI ----------------------------------------------------------------------------------


class AuthError(Exception):
    """A request that failed authentication (401) or lacks a scope (403)."""

    def __init__(self, status: int, slug: str, detail: str, www_authenticate: str) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.www_authenticate = www_authenticate


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _invalid(detail: str, *, with_error: bool = True) -> AuthError:
    challenge = f"Bearer realm={_quoted(REALM)}"
    if with_error:  # RFC 6750 3.1: no error code when the request had no credentials at all
        challenge += f", error={_quoted('invalid_token')}, error_description={_quoted(detail)}"
    return AuthError(401, "invalid-token", detail, challenge)


def verifier_of(request: Request) -> TokenVerifier:
    verifier = getattr(request.app.state, "token_verifier", None)
    if not isinstance(verifier, TokenVerifier):
        raise RuntimeError("no token verifier: call api.oauth.install_oauth(app, runtime) first")
    return verifier


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise _invalid("no bearer token", with_error=False)
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise _invalid("not a bearer token")
    return value.strip()


def require_scopes(*scopes: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the verified caller, who must hold every one of `scopes`.

    With no scopes, any valid token will do. Run on the event loop: a checked token is
    cached under the change stamp, so a request costs one indexed one-row read (the stamp),
    far less than the threadpool hop a sync dependency costs. A token seen for the first
    time reads its state too, a few more short statements.
    """
    required = frozenset(str(s) for s in scopes)
    unknown = required - _KNOWN_SCOPES
    if unknown:
        raise ValueError(f"unknown scopes: {sorted(unknown)}")
    wanted = " ".join(s.value for s in Scope if s.value in required)

    async def dependency(request: Request) -> Principal:
        token = bearer_token(request)
        verifier = verifier_of(request)
        certificate = client_certificate(request.state)
        try:
            if verifier.checks_locally(token):
                principal = verifier.verify(token, certificate)
            else:  # an external issuer's key set may have to be fetched: not on the loop
                principal = await run_in_threadpool(verifier.verify, token, certificate)
        except InvalidToken as exc:
            raise _invalid(exc.reason) from None
        if not required <= principal.scopes:
            raise AuthError(
                403,
                "insufficient-scope",
                f"this needs the scope {wanted}",
                f"Bearer realm={_quoted(REALM)}, error={_quoted('insufficient_scope')}, "
                f"scope={_quoted(wanted)}",
            )
        request.state.principal = principal
        return principal

    # Read by api.http.openapi to document each operation's scopes.
    dependency.required_scopes = sorted(required)  # type: ignore[attr-defined]
    return dependency


def install_auth_handlers(app: FastAPI) -> None:
    """Map AuthError to an RFC 9457 problem with its WWW-Authenticate challenge."""

    @app.exception_handler(AuthError)
    async def _auth_error(request: Request, exc: AuthError) -> JSONResponse:
        response = problem(request, exc.slug, exc.detail, status=exc.status)
        response.headers["WWW-Authenticate"] = exc.www_authenticate
        return response
