"""The OAuth endpoints over HTTP, and `install_oauth`, which puts them into an app.

* `/oauth/authorize`: the login form (GET) and its submission (POST). Simplified Chinese by
  default, English with `?lang=en`. First-party clients (our own pages) skip approval: a
  correct password redirects straight back with the code. Other clients show what they
  ask for beside the form, with a button to refuse.
* `/oauth/token`, `/oauth/revoke`, `/oauth/introspect`: form-encoded, answered by authlib.
* `/oauth/jwks` and `/.well-known/oauth-authorization-server`: public.

Failed logins are limited per (username, address) and per address across usernames
(`api.oauth.ratelimit`); failed client authentications, by the server, per client id and
per address.

The form is protected against login CSRF by a double-submit nonce: an HttpOnly,
SameSite=Strict cookie and a hidden `csrf_token` field holding the same nonce with a time
and an Ed25519 signature by the keyring (key `oauth-csrf`), so only a form this server
issued, to this browser, recently, is accepted.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import structlog
from authlib.oauth2.rfc6749 import OAuth2Error
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from jinja2 import Environment
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import ImmutableMultiDict

from access.runtime import Runtime
from api.http import schemas
from api.http.middleware import TransportSecurity, client_certificate
from api.http.problems import problem
from api.oauth.config import OAuthSettings
from api.oauth.keys import CSRF_KEY_NAME, ensure_oauth_keys, jwks, published_keys
from api.oauth.ratelimit import LoginLimiter
from api.oauth.scopes import Scope
from api.oauth.server import (
    AuthorizationPrompt,
    AuthorizationRefused,
    AuthorizationStep,
    FormOAuth2Request,
    LoginFailed,
    VaultAuthorizationServer,
)
from api.oauth.tokens import TokenVerifier, install_auth_handlers
from api.settings import settings_of
from vault.i18n import HTML_LANG, LANGS, gettext_for, negotiate, text
from vault.interfaces import Keyring

log = structlog.get_logger(__name__)

MAX_FORM_BYTES = 16 * 1024
MAX_FORM_FIELDS = 32
_SCOPE_VALUES = frozenset(s.value for s in Scope)
CSRF_FIELD = "csrf_token"

# -- what the endpoints take, for the OpenAPI document --------------------------------------

_TEXT_LIMIT = 2000  # any one form value; the whole form is MAX_FORM_BYTES
_PKCE = r"^[A-Za-z0-9._~-]{43,128}$"  # RFC 7636 section 4.1


_PRINTABLE_PATTERN = "^[ -~]*$"
_PRINTABLE = re.compile(_PRINTABLE_PATTERN)


def _text(description: str, most: int = _TEXT_LIMIT) -> dict[str, Any]:
    return {"type": "string", "maxLength": most, "description": description}


def _ascii(description: str, most: int = _TEXT_LIMIT) -> dict[str, Any]:
    """An OAuth protocol parameter: printable ASCII (RFC 6749 appendix A)."""
    return {**_text(description, most), "pattern": _PRINTABLE_PATTERN}


def _form(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    return {
        "requestBody": {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": schema}},
        }
    }


# Only bounds: a missing or unknown value of a client that can be redirected to goes back
# to it as an OAuth error (RFC 6749 section 4.1.2.1), not as a refusal here.
AUTHORIZE_PARAMETERS: list[dict[str, Any]] = [
    {"name": name, "in": "query", "required": name == "client_id", "schema": schema}
    for name, schema in (
        ("response_type", _ascii("code", 32)),
        ("client_id", _ascii("a registered public client", 64)),
        ("redirect_uri", _ascii("one of the client's registered redirect URIs")),
        ("scope", _ascii("space-separated scopes", 500)),
        ("state", _ascii("returned unchanged with the code", 500)),
        ("code_challenge", _ascii("PKCE (RFC 7636): BASE64URL(SHA-256(code_verifier))", 128)),
        ("code_challenge_method", _ascii("S256", 16)),
        ("lang", _ascii("zh or en", 16)),
        ("ui_locales", _ascii("preferred languages, space-separated", 100)),
    )
]
_AUTHORIZE_BOUNDS = {p["name"]: p["schema"]["maxLength"] for p in AUTHORIZE_PARAMETERS}


def _out_of_bounds(request: Request) -> JSONResponse | None:
    """A 422 problem for a query value beyond its declared bound, as every route gives.
    RFC 6749's parameters are printable ASCII (appendix A), and authlib quotes some in its
    error descriptions, which must be (section 5.2): anything else is refused here."""
    errors = [
        {"field": name, "message": f"at most {most} printable ASCII characters"}
        for name, most in _AUTHORIZE_BOUNDS.items()
        if len(value := request.query_params.get(name, "")) > most
        or not _PRINTABLE.fullmatch(value)
    ]
    return problem(request, "validation-error", errors=errors) if errors else None


LOGIN_FORM = {
    "username": _text("the person's login name", 128),
    "password": {**_text("their password", 1024), "format": "password"},
    CSRF_FIELD: _text("the hidden field of the form this server issued", 256),
    "decision": {"type": "string", "enum": ["allow", "deny"]},
}
_CLIENT = {
    "client_id": _text("the client, when it authenticates in the body or is public", 64),
    "client_secret": {**_text("client_secret_post; HTTP Basic is preferred", 256)},
}
TOKEN_FORM = {
    "grant_type": {
        "type": "string",
        "enum": ["client_credentials", "authorization_code", "refresh_token"],
    },
    "scope": _text("space-separated scopes", 500),
    "code": _text("authorization_code: the code", 512),
    "redirect_uri": _text("authorization_code: the redirect URI the code was sent to"),
    "code_verifier": {"type": "string", "pattern": _PKCE},
    "refresh_token": _text("refresh_token: the refresh token", 512),
    **_CLIENT,
}
TOKEN_HINT_FORM = {
    "token": _text("an access or refresh token", 4096),
    "token_type_hint": {"type": "string", "enum": ["access_token", "refresh_token"]},
    **_CLIENT,
}

# -- forms -------------------------------------------------------------------------------------


class FormError(Exception):
    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


async def read_form(request: Request, *, unique: bool = True) -> ImmutableMultiDict[str, str]:
    """An application/x-www-form-urlencoded body, bounded in size and fields.

    Parsed here rather than by Starlette, which needs python-multipart even for this.
    With `unique`, a repeated parameter is refused (RFC 6749 section 3.2).
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise FormError("The body must be application/x-www-form-urlencoded")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormError("The body is too large")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise FormError("The body is not a valid form") from None
    if unique:
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise FormError(f"Repeated parameter '{name}'")
            seen.add(name)
    return ImmutableMultiDict(pairs)


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _oauth_request(
    request: Request, form: ImmutableMultiDict[str, str] | None, *, payload_from: str = "form"
) -> FormOAuth2Request:
    args: ImmutableMultiDict[str, str] = ImmutableMultiDict(request.query_params.multi_items())
    settings: OAuthSettings = request.app.state.oauth_server.settings
    return FormOAuth2Request(
        request.method,
        str(request.url),
        request.headers,
        args,
        form,
        payload_from=payload_from,
        allow_http=settings.insecure_transport,
        client_certificate=client_certificate(request.state),
        client_address=_address(request),
    )


def _oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


# -- CSRF --------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CsrfGuard:
    KEY_NAME = CSRF_KEY_NAME

    def __init__(self, keyring: Keyring, max_age_seconds: int) -> None:
        self._keyring = keyring
        self.max_age = max_age_seconds
        self._public: Ed25519PublicKey | None = None

    @staticmethod
    def cookie_name(secure: bool) -> str:
        # __Host- cookies are bound to this exact origin: no subdomain can plant one.
        return "__Host-rv_oauth_csrf" if secure else "rv_oauth_csrf"

    @staticmethod
    def new_nonce() -> str:
        return secrets.token_urlsafe(18)

    def issue(self, nonce: str) -> str:
        message = f"{nonce}.{int(time.time())}"
        signature = self._keyring.sign(self.KEY_NAME, message.encode("ascii"))
        return f"{message}.{_b64(signature)}"

    def check(self, token: str, cookie: str | None) -> bool:
        parts = token.split(".")
        if cookie is None or len(parts) != 3:
            return False
        nonce, issued, signature = parts
        if not secrets.compare_digest(nonce.encode(), cookie.encode()) or not issued.isdigit():
            return False
        if not 0 <= time.time() - int(issued) <= self.max_age:
            return False
        if self._public is None:
            raw = self._keyring.signing_public_key(self.KEY_NAME)
            self._public = Ed25519PublicKey.from_public_bytes(raw)
        try:
            self._public.verify(_unb64(signature), f"{nonce}.{issued}".encode("ascii"))
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        return True


# -- the pages -----------------------------------------------------------------------------------

_PAGE = """<!doctype html>
<html lang="{{ html_lang }}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ _('oauth.login.title') }} · {{ _('product') }}</title>
<style nonce="{{ nonce }}">
body{font-family:system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1b1d21;line-height:1.5}
main{max-width:24rem;margin:3rem auto;padding:2rem;background:#fff;border-radius:8px;
box-shadow:0 1px 3px rgba(0,0,0,.2)}
h1{font-size:1.5rem;margin:0 0 1rem}
label{display:block;font-weight:600;margin-top:1rem}
input{box-sizing:border-box;width:100%;font-size:1rem;padding:.6rem;border:1px solid #6b7280;
border-radius:4px}
input:focus,button:focus,a:focus{outline:3px solid #1d4ed8;outline-offset:2px}
button{font-size:1rem;padding:.6rem 1.2rem;margin:1.5rem .5rem 0 0;border-radius:4px;
border:1px solid #1d4ed8;background:#1d4ed8;color:#fff;cursor:pointer}
button.secondary{background:#fff;color:#1d4ed8}
.error{color:#b91c1c;font-weight:600;margin:1rem 0 0}
a{color:#1d4ed8}
</style>
</head>
<body>
<main>
<h1>{{ _('oauth.login.title') }}</h1>
{% if refused %}
<p id="form-error" class="error" role="alert">{{ error }}</p>
{% else %}
<p>{{ _('oauth.login.intro') }} <strong>{{ client_name }}</strong></p>
{% if scopes %}
<h2 id="scopes-heading">{{ _('oauth.login.requests') }}</h2>
<ul aria-labelledby="scopes-heading">{% for s in scopes %}<li>{{ s }}</li>{% endfor %}</ul>
{% endif %}
{% if error %}<p id="form-error" class="error" role="alert">{{ error }}</p>{% endif %}
<form method="post" action="{{ action }}"
{%- if error %} aria-describedby="form-error"{% endif %}>
<input type="hidden" name="csrf_token" value="{{ csrf }}">
<label for="username">{{ _('oauth.login.username') }}</label>
<input id="username" name="username" type="text" autocomplete="username" autocapitalize="none"
 spellcheck="false" required value="{{ username }}"{% if error %} aria-invalid="true"{% endif %}>
<label for="password">{{ _('oauth.login.password') }}</label>
<input id="password" name="password" type="password" autocomplete="current-password"
 required{% if error %} aria-invalid="true"{% endif %}>
<button type="submit" name="decision" value="allow">
{{- _('oauth.login.submit') if first_party else _('oauth.login.allow') }}</button>
{% if not first_party -%}
<button type="submit" name="decision" value="deny" class="secondary" formnovalidate>
{{- _('oauth.login.deny') }}</button>
{%- endif %}
</form>
{% endif %}
<p><a href="{{ other_lang_url }}" lang="{{ other_html_lang }}"
 hreflang="{{ other_html_lang }}">{{ _('lang.switch') }}</a></p>
</main>
</body>
</html>
"""

# Words by catalogue id through Jinja2's i18n extension; each render passes `gettext`.
_TEMPLATE = Environment(autoescape=True, extensions=["jinja2.ext.i18n"]).from_string(_PAGE)


def _lang(request: Request) -> str:
    """`?lang=`, else the client's `ui_locales` (space-separated, in order of preference),
    else the browser's Accept-Language: the one picker, `vault.i18n.negotiate`."""
    wanted = request.query_params.get("ui_locales", "").split()
    wanted.append(request.headers.get("accept-language") or "")
    return negotiate(request.query_params.get("lang"), None, ",".join(wanted))


def _with_lang(request: Request, lang: str) -> str:
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "lang"]
    params.append(("lang", lang))
    return f"{request.url.path}?{urlencode(params)}"


def _origin(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}"


class Pages:
    def __init__(self, csrf: CsrfGuard) -> None:
        self.csrf = csrf

    def _html(
        self, request: Request, status: int, context: Mapping[str, Any], form_action: str = ""
    ) -> HTMLResponse:
        nonce = secrets.token_urlsafe(12)
        lang = _lang(request)
        other = next(other for other in LANGS if other != lang)
        body = _TEMPLATE.render(
            gettext=gettext_for(lang),
            html_lang=HTML_LANG[lang],
            other_html_lang=HTML_LANG[other],
            nonce=nonce,
            other_lang_url=_with_lang(request, other),
            **context,
        )
        csp = (
            f"default-src 'none'; style-src 'nonce-{nonce}'; base-uri 'none'; "
            f"frame-ancestors 'none'; form-action 'self'{form_action}"
        )
        return HTMLResponse(
            body,
            status_code=status,
            headers={
                "Cache-Control": "no-store",
                "Content-Security-Policy": csp,
                "X-Frame-Options": "DENY",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
            },
        )

    def refused(self, request: Request, error: str, status: int = 400) -> HTMLResponse:
        message = text("oauth.login.refused", _lang(request), error=error)
        return self._html(request, status, {"refused": True, "error": message})

    def form(
        self,
        request: Request,
        prompt: AuthorizationPrompt,
        *,
        status: int = 200,
        error: str | None = None,
        username: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> HTMLResponse:
        lang = _lang(request)
        secure = request.url.scheme == "https"
        cookie_name = self.csrf.cookie_name(secure)
        nonce = request.cookies.get(cookie_name) or self.csrf.new_nonce()
        scopes = (
            []
            if prompt.first_party
            else [Scope(s).description(lang) for s in prompt.scopes if s in _SCOPE_VALUES]
        )
        action = f"{request.url.path}?{request.url.query}"
        response = self._html(
            request,
            status,
            {
                "refused": False,
                "client_name": prompt.client_name,
                "first_party": prompt.first_party,
                "scopes": scopes,
                "error": error,
                "username": username,
                "csrf": self.csrf.issue(nonce),
                "action": action,
            },
            # Browsers apply form-action to the redirect that follows the post as well.
            form_action=f" {_origin(prompt.redirect_uri)}",
        )
        response.set_cookie(
            cookie_name,
            nonce,
            max_age=self.csrf.max_age,
            path="/",
            secure=secure,
            httponly=True,
            samesite="strict",
        )
        for name, value in (headers or {}).items():
            response.headers[name] = value
        return response


# -- the router ----------------------------------------------------------------------------------


class OAuthRoutes:
    """The handlers, bound to one server; `router()` mounts them."""

    def __init__(self, server: VaultAuthorizationServer, limiter: LoginLimiter) -> None:
        self.server = server
        self.limiter = limiter
        self.runtime = server.runtime
        keyring = server.runtime.vault.keyring
        self.pages = Pages(CsrfGuard(keyring, server.settings.csrf_max_age_seconds))

    def router(self) -> APIRouter:
        router = APIRouter(tags=["oauth"])
        router.add_api_route(
            "/.well-known/oauth-authorization-server",
            self.metadata,
            methods=["GET"],
            summary="Authorization server metadata (RFC 8414)",
            response_model=schemas.ServerMetadata,
        )
        router.add_api_route(
            "/oauth/jwks",
            self.jwks_document,
            methods=["GET"],
            summary="Public keys of access tokens not yet expired",
        )
        router.add_api_route(
            "/oauth/authorize",
            self.authorize_form,
            methods=["GET"],
            response_class=HTMLResponse,
            summary="Login form (authorization code with PKCE)",
            openapi_extra={"parameters": AUTHORIZE_PARAMETERS},
        )
        router.add_api_route(
            "/oauth/authorize",
            self.authorize_submit,
            methods=["POST"],
            response_class=HTMLResponse,
            summary="The login form's submission: a redirect with the code, or the form again",
            openapi_extra={"parameters": AUTHORIZE_PARAMETERS, **_form(LOGIN_FORM, [])},
        )
        for path, handler, summary, model, form, required in (
            (
                "/oauth/token",
                self.token,
                "Token endpoint (RFC 6749)",
                schemas.TokenAnswer,
                TOKEN_FORM,
                ["grant_type"],
            ),
            (
                "/oauth/revoke",
                self.revoke,
                "Token revocation (RFC 7009)",
                schemas.Revoked,
                TOKEN_HINT_FORM,
                ["token"],
            ),
            (
                "/oauth/introspect",
                self.introspect,
                "Token introspection (RFC 7662)",
                schemas.Introspection,
                TOKEN_HINT_FORM,
                ["token"],
            ),
        ):
            router.add_api_route(
                path,
                handler,
                methods=["POST"],
                summary=summary,
                response_model=model,
                openapi_extra=_form(form, required),
            )
        return router

    def _step_response(self, request: Request, step: AuthorizationStep, **form: Any) -> Response:
        if isinstance(step, Response):
            return step
        if isinstance(step, AuthorizationRefused):
            # No such client: not found, like any unknown id; a client that may not ask this
            # (a redirect URI it did not register): forbidden.
            status = 404 if step.error == "invalid_client" else 403
            return self.pages.refused(request, step.error, status)
        prompt = step.prompt if isinstance(step, LoginFailed) else step
        return self.pages.form(request, prompt, **form)

    async def metadata(self) -> JSONResponse:
        return JSONResponse(
            self.server.metadata(), headers={"Cache-Control": "public, max-age=300"}
        )

    def jwks_document(self) -> JSONResponse:
        with self.runtime.vault.sessions() as session:
            document = jwks(published_keys(session))
        return JSONResponse(
            document,
            media_type="application/jwk-set+json",
            headers={"Cache-Control": "public, max-age=60"},
        )

    async def authorize_form(self, request: Request) -> Response:
        refused = _out_of_bounds(request)
        if refused is not None:
            return refused
        try:
            oauth_request = _oauth_request(request, None, payload_from="args")
        except OAuth2Error as error:
            return self.pages.refused(request, str(error.error))
        step = await run_in_threadpool(self.server.check_authorization, oauth_request)
        return self._step_response(request, step)

    async def authorize_submit(self, request: Request) -> Response:
        refused = _out_of_bounds(request)
        return refused if refused is not None else await self._submit(request)

    async def _submit(self, request: Request) -> Response:
        lang = _lang(request)
        try:
            form = await read_form(request)
            oauth_request = _oauth_request(request, form, payload_from="args")
        except FormError:
            return self.pages.refused(request, "invalid_request")
        except OAuth2Error as error:
            return self.pages.refused(request, str(error.error))
        username = form.get("username", "").strip()
        approve = form.get("decision", "allow") != "deny"
        cookie = request.cookies.get(self.pages.csrf.cookie_name(request.url.scheme == "https"))
        if not self.pages.csrf.check(form.get(CSRF_FIELD, ""), cookie):
            step = await run_in_threadpool(self.server.check_authorization, oauth_request)
            # Forbidden: the form was not issued to this browser, or too long ago (CSRF).
            return self._step_response(
                request,
                step,
                status=403,
                error=text("oauth.login.expired", lang),
                username=username,
            )
        address = _address(request)
        wait = self.limiter.retry_after(username, address) if approve else 0.0
        if wait > 0:
            step = await run_in_threadpool(self.server.check_authorization, oauth_request)
            return self._step_response(
                request,
                step,
                status=429,
                error=text("oauth.login.too-many", lang, minutes=max(1, math.ceil(wait / 60))),
                username=username,
                headers={"Retry-After": str(math.ceil(wait))},
            )
        step = await run_in_threadpool(
            self.server.complete_authorization,
            oauth_request,
            username,
            form.get("password", ""),
            approve=approve,
        )
        if isinstance(step, LoginFailed):
            self.limiter.failed(username, address)
            if self.limiter.blocked_by_address(address):
                # Many usernames failing from one place: spraying, or a very unlucky office.
                # Logged once, when the limit is reached; never the usernames tried.
                log.warning("oauth.login_limited", limit="address", address=address)
            return self._step_response(
                request,
                step,
                status=400,
                error=text("oauth.login.bad-credentials", lang),
                username=username,
            )
        if isinstance(step, Response) and step.status_code == 302:
            if approve:
                self.limiter.succeeded(username, address)
            step.status_code = 303  # after a POST, the browser must GET the redirect URI
        return self._step_response(request, step)

    async def _form_endpoint(self, request: Request, call: Any) -> Response:
        try:
            form = await read_form(request)
            oauth_request = _oauth_request(request, form)
        except FormError as error:
            return _oauth_error("invalid_request", error.description)
        except OAuth2Error as error:
            return _oauth_error(str(error.error), str(error.get_error_description() or ""))
        response: Response = await run_in_threadpool(call, oauth_request)
        return response

    async def token(self, request: Request) -> Response:
        return await self._form_endpoint(request, self.server.token_response)

    async def revoke(self, request: Request) -> Response:
        return await self._form_endpoint(request, self.server.revocation_response)

    async def introspect(self, request: Request) -> Response:
        return await self._form_endpoint(request, self.server.introspection_response)


def install_oauth(
    app: FastAPI, runtime: Runtime, settings: OAuthSettings | None = None
) -> VaultAuthorizationServer:
    """Mount the OAuth endpoints, the token verifier and the auth problem handlers on `app`,
    with the transport layer they rely on (`TransportSecurity`: trusted proxies, the
    client certificate of certificate-bound tokens, secure headers).

    Routes protected with `require_scopes` find the verifier in `app.state.token_verifier`.
    """
    settings = settings or OAuthSettings()
    transport = settings_of(runtime)
    if "issuer" not in settings.model_fields_set and transport.tls_cert_file is not None:
        # The default issuer follows the scheme this service is reached by.
        https = settings.issuer.replace("http://", "https://", 1)
        settings = settings.model_copy(update={"issuer": https})
    verifier = TokenVerifier(runtime.vault.sessions, settings, stamps=runtime.vault.stamps)
    server = VaultAuthorizationServer(runtime, settings, verifier, transport)
    ensure_oauth_keys(runtime)
    limiter = LoginLimiter(
        settings.login_max_failures,
        settings.login_window_seconds,
        address_max_failures=settings.login_address_max_failures,
    )
    app.state.token_verifier = verifier
    app.state.oauth_server = server
    app.state.login_limiter = limiter
    app.include_router(OAuthRoutes(server, limiter).router())
    install_auth_handlers(app)
    app.add_middleware(TransportSecurity, settings=transport)
    return server
