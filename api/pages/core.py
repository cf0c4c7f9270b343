"""What every page shares: sessions, login through our own OAuth server, the in-process API
client, CSRF, security headers and rendering.

* **Login.** A page is an OAuth client: `/<area>/login` sends the browser to
  `/oauth/authorize` with PKCE (S256) and a random `state`; `/<area>/callback` checks the
  state against the session and exchanges the code at `/oauth/token`. Tokens stay on the
  server, in a session the browser knows only by a random id in an HttpOnly, Secure,
  SameSite=Strict cookie. The session id changes at login.
* **Data.** Pages never read the vault. Each view calls the HTTP API in process (httpx's
  ASGI transport) with the person's own bearer token, so the gate, policy, consent checks
  and audit entries are exactly those of the API, and carry the page's request id.
* **Forms.** Every POST carries the session's CSRF token (compared in constant time) and,
  when the browser sends one, an `Origin` equal to ours.
* **Headers.** A strict Content-Security-Policy (scripts and styles from our own static
  files only, no inline script), no framing, no referrer, `no-store`.
* **Words.** Templates name their text by catalogue id with Jinja2's i18n extension:
  `{{ _('portal.download.csv') }}`, `{{ _('console.total', n=3) }}` (the catalogue's `{n}`
  placeholders are filled with `str.format`). Each render passes `gettext` for the
  request's language, picked by `vault.i18n.negotiate` (`?lang=`, the `rv_lang` cookie,
  `Accept-Language`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import structlog
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException

from access.corrections import Actor, CorrectionError, actor_for
from access.runtime import Runtime
from api.oauth.tokens import InvalidToken
from api.pages.clients import AREA_SCOPES, choose_callback, pages_clients
from api.pages.messages import HTML_LANG, LANGS, label
from vault.i18n import gettext_for, negotiate

log = structlog.get_logger(__name__)

HERE = Path(__file__).parent
STATIC_PATH = "/pages-static"
AREAS = ("portal", "desk", "console", "operator")
AREA_ROLES: dict[str, tuple[str, ...]] = {
    "portal": ("resident",),
    "desk": ("grid_worker", "community_worker"),
    "console": ("auditor",),
    "operator": ("operator",),
}
NAV: dict[str, list[tuple[str, str]]] = {
    "portal": [
        ("/portal/", "portal.record"),
        ("/portal/accesses", "portal.accesses"),
        ("/portal/consents", "portal.consents"),
        ("/portal/children", "portal.children"),
        ("/portal/download", "portal.download"),
        ("/portal/correction", "portal.correction"),
    ],
    "desk": [("/desk/", "desk.find"), ("/desk/corrections", "desk.corrections")],
    "console": [
        ("/console/", "console.search"),
        ("/console/charts", "console.charts"),
        ("/console/anomalies", "console.anomalies"),
        ("/console/heads", "console.heads"),
    ],
    "operator": [
        ("/operator/", "operator.places"),
        ("/operator/organisations", "operator.organisations"),
        ("/operator/mandates", "operator.mandates"),
        ("/operator/accounts", "operator.accounts"),
    ],
}
CSRF_FIELD = "csrf_token"
CHINA = timezone(timedelta(hours=8), "Asia/Shanghai")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make browsers send Origin: null
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


# -- sessions --------------------------------------------------------------------------------


@dataclass
class PageSession:
    """One browser's session. Tokens never leave the server."""

    id: str
    csrf: str
    created: float = field(default_factory=time.time)
    access_token: str | None = None
    refresh_token: str | None = None
    expires_at: float = 0.0
    client_id: str | None = None
    username: str | None = None
    role: str | None = None
    area: str | None = None
    login_state: str | None = None
    login_verifier: str | None = None
    login_area: str | None = None
    login_redirect_uri: str | None = None
    login_started: float = 0.0
    hidden_fields: set[str] = field(default_factory=set)
    flash: str | None = None

    @property
    def signed_in(self) -> bool:
        return self.access_token is not None


class SessionStore:
    """Sessions in memory, per process (like export summaries); a restart signs people out."""

    def __init__(self, max_age: float = 8 * 3600, *, login_seconds: float = 600) -> None:
        self.max_age = max_age  # VAULT_PAGE_SESSION_SECONDS
        self.login_seconds = login_seconds  # VAULT_PAGE_LOGIN_SECONDS
        self._items: dict[str, PageSession] = {}
        self._lock = threading.Lock()

    def new(self) -> PageSession:
        session = PageSession(id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32))
        with self._lock:
            self._prune()
            self._items[session.id] = session
        return session

    def get(self, session_id: str | None) -> PageSession | None:
        if not session_id:
            return None
        with self._lock:
            found = self._items.get(session_id)
            if found is not None and time.time() - found.created > self.max_age:
                del self._items[session_id]
                return None
            return found

    def rotate(self, session: PageSession) -> PageSession:
        """A new id (and CSRF token) for the same session: no fixation across login."""
        with self._lock:
            self._items.pop(session.id, None)
            session.id = secrets.token_urlsafe(32)
            session.csrf = secrets.token_urlsafe(32)
            session.created = time.time()
            self._items[session.id] = session
        return session

    def drop(self, session: PageSession) -> None:
        with self._lock:
            self._items.pop(session.id, None)

    def _prune(self) -> None:
        now = time.time()
        for key in [k for k, v in self._items.items() if now - v.created > self.max_age]:
            del self._items[key]


def secure_request(request: Request) -> bool:
    return request.url.scheme == "https"


def cookie_name(request: Request, base: str) -> str:
    # __Host- cookies are bound to this exact origin (https only, as browsers require).
    return f"__Host-{base}" if secure_request(request) else base


def store_of(request: Request) -> SessionStore:
    store: SessionStore = request.app.state.page_sessions
    return store


def current_session(request: Request) -> PageSession | None:
    return store_of(request).get(request.cookies.get(cookie_name(request, "rv_pages")))


def set_session_cookie(request: Request, response: Response, session: PageSession) -> None:
    response.set_cookie(
        cookie_name(request, "rv_pages"),
        session.id,
        max_age=int(store_of(request).max_age),
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )


# -- language and display preferences -------------------------------------------------------


def lang_of(request: Request) -> str:
    """The page's language: `?lang=`, else the remembered `rv_lang`, else Accept-Language."""
    return negotiate(
        request.query_params.get("lang"),
        request.cookies.get("rv_lang"),
        request.headers.get("accept-language"),
    )


def large_text(request: Request) -> bool:
    wanted = request.query_params.get("text") or request.cookies.get("rv_text") or "normal"
    return wanted == "large"


def with_query(request: Request, **changes: str) -> str:
    params = dict(request.query_params)
    params.update(changes)
    return f"{request.url.path}?{urlencode(params)}"


# -- rendering -------------------------------------------------------------------------------

# `_(id, **values)` calls the `gettext` each render passes for its language (templates use
# `_()` only: `{% trans %}` would fill `%(name)s`, and the catalogue's placeholders are `{name}`).
_ENV = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html", "svg"]),
    trim_blocks=True,
    lstrip_blocks=True,
    extensions=["jinja2.ext.i18n"],
)


def iso_time(value: str | datetime | None, lang: str = "zh") -> str:
    """ISO 8601 with its offset, in China time (where the people using the pages are)."""
    if value is None or value == "":
        return ""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(CHINA).isoformat(timespec="seconds")


_ENV.filters["iso"] = iso_time


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any],
    *,
    status: int = 200,
    session: PageSession | None = None,
    area: str | None = None,
) -> HTMLResponse:
    lang = lang_of(request)
    large = large_text(request)
    body = _ENV.get_template(template).render(
        gettext=gettext_for(lang),
        lang=lang,
        html_lang=HTML_LANG[lang],
        large=large,
        area=area,
        session=session,
        csrf=session.csrf if session else "",
        csrf_field=CSRF_FIELD,
        static=STATIC_PATH,
        lang_url=with_query(request, lang="zh" if lang == "en" else "en"),
        text_url=with_query(request, text="normal" if large else "large"),
        path=request.url.path,
        nav_items=lambda name: NAV.get(name, []),
        label=lambda prefix, value: label(prefix, value, lang),
        **context,
    )
    response = HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)
    remember_preferences(request, response)
    return response


def remember_preferences(request: Request, response: Response) -> None:
    """`?lang=` and `?text=` stick for the next pages (display only, not personal data)."""
    for query, cookie in (("lang", "rv_lang"), ("text", "rv_text")):
        value = request.query_params.get(query)
        if value in {*LANGS, "large", "normal"}:
            response.set_cookie(
                cookie,
                value,
                max_age=365 * 86400,
                path="/",
                secure=True,
                httponly=True,
                samesite="lax",
            )


def error_page(
    request: Request,
    key: str,
    *,
    status: int = 400,
    session: PageSession | None = None,
    area: str | None = None,
    detail: str | None = None,
) -> HTMLResponse:
    return render(
        request,
        "error.html",
        {"message_key": key, "detail": detail},
        status=status,
        session=session,
        area=area,
    )


class PageRoute(APIRoute):
    """A page's route: a path or query value outside its declared bounds (a 2**70 access
    index) gets the error page in the page's language, not the API's JSON problem."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError:
                area = request.url.path.split("/")[1]
                return error_page(request, "invalid_input", status=422, area=area)

        return page_handler


def redirect(url: str) -> RedirectResponse:
    response = RedirectResponse(url, status_code=303)
    response.headers.update(SECURITY_HEADERS)
    return response


# -- the in-process API client --------------------------------------------------------------


class ApiRefused(Exception):
    """The API said no; `problem` is its problem details (already in the page's language)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(problem.get("title") or status)
        self.status = status
        self.problem = problem

    @property
    def detail(self) -> str:
        return str(self.problem.get("detail") or self.problem.get("title") or self.status)


class SignedOut(Exception):
    """The session's tokens no longer work: sign in again."""


def session_actor(request: Request, page: PageSession) -> Actor:
    """The signed-in person of a page session, as the gate would see them; SignedOut when
    the session's token no longer verifies. Sync: run it in the threadpool."""
    try:
        principal = request.app.state.token_verifier.verify(page.access_token or "")
    except InvalidToken:
        raise SignedOut from None
    runtime: Runtime = request.app.state.runtime
    return actor_for(runtime, principal, request.state.request_id)


def correction_refusal(error: CorrectionError, lang: str, status: int = 404) -> ApiRefused:
    """What a page says to a refused correction: the gate's reason when the whole decision
    refused (it names no request), else the error's key."""
    if error.refusal is None:
        return ApiRefused(status, {"title": error.key})
    refusal = error.refusal
    return ApiRefused(403, {"detail": refusal.message.text(lang)})


class Api:
    """The HTTP API called in process with the person's token and the page's request id."""

    def __init__(self, request: Request, session: PageSession | None) -> None:
        self.request = request
        self.session = session

    def _client(self) -> httpx.AsyncClient:
        peer = self.request.client
        transport = httpx.ASGITransport(
            app=self.request.app,
            client=(peer.host, peer.port) if peer else ("127.0.0.1", 0),
        )
        return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {
            "X-Request-ID": str(getattr(self.request.state, "request_id", "")),
            "Accept-Language": HTML_LANG[lang_of(self.request)],
        }
        if self.session is not None and self.session.access_token:
            headers["Authorization"] = f"Bearer {self.session.access_token}"
        headers.update(extra or {})
        return headers

    async def raw(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        form: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
    ) -> httpx.Response:
        if auth and self.session is not None:
            await self.fresh()
        clean = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        async with self._client() as client:
            response = await client.request(
                method,
                path,
                params=clean or None,
                json=json_body,
                data=dict(form) if form is not None else None,
                headers=self._headers(headers) if auth else self._headers_public(headers),
            )
        # The inner request ran in this task: put the page's request id back for logging.
        structlog.contextvars.bind_contextvars(
            request_id=getattr(self.request.state, "request_id", None)
        )
        if response.status_code == 401 and auth:
            raise SignedOut
        return response

    def _headers_public(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = self._headers(extra)
        headers.pop("Authorization", None)
        return headers

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.raw(method, path, **kwargs)
        if response.status_code >= 400:
            raise ApiRefused(response.status_code, _problem(response))
        return response.json()

    async def get(self, path: str, **kwargs: Any) -> Any:
        return await self.json("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Any:
        return await self.json("POST", path, **kwargs)

    async def fresh(self) -> None:
        """Refresh the access token a little before it expires (refresh tokens rotate)."""
        session = self.session
        if session is None or not session.access_token:
            raise SignedOut
        if time.time() < session.expires_at - 20 or not session.refresh_token:
            return
        response = await self.raw(
            "POST",
            "/oauth/token",
            form={
                "grant_type": "refresh_token",
                "refresh_token": session.refresh_token,
                "client_id": session.client_id or "",
            },
            auth=False,
        )
        if response.status_code != 200:
            session.access_token = None
            raise SignedOut
        keep_tokens(session, response.json())


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"status": response.status_code}
    return body if isinstance(body, dict) else {"status": response.status_code}


def keep_tokens(session: PageSession, tokens: Mapping[str, Any]) -> None:
    session.access_token = str(tokens["access_token"])
    session.refresh_token = tokens.get("refresh_token") or session.refresh_token
    session.expires_at = time.time() + float(tokens.get("expires_in") or 300)
    claims = _claims(session.access_token)
    session.role = claims.get("role")
    sub = str(claims.get("sub") or "")
    session.username = sub.removeprefix("user:") if sub.startswith("user:") else None


def _claims(jwt: str) -> dict[str, Any]:
    """The claims of a token we were just handed by our own token endpoint, in process.

    Only for display and routing (role, username); the API verifies the token itself on
    every call."""
    try:
        payload = jwt.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


# -- login ---------------------------------------------------------------------------------------


def origin_of(request: Request) -> str:
    """The origin this request came to, as the scheme (X-Forwarded-Proto from a trusted
    proxy, api.http.middleware) and the Host header say."""
    return f"{request.url.scheme}://{request.url.netloc}"


def public_origins(request: Request) -> tuple[str, ...]:
    """VAULT_PUBLIC_URL's origins (install_pages keeps them on the app)."""
    return tuple(getattr(request.app.state, "public_origins", ()))


def callback_uri(request: Request, area: str) -> str:
    return f"{origin_of(request)}/{area}/callback"


def callback_candidates(request: Request, area: str) -> list[str]:
    """Where the browser may be, most likely first: the request's own origin, then the
    configured public ones, those of the request's host name first. Behind a proxy whose
    forwarded scheme is not believed, or that rewrites Host, the request's origin is not
    the browser's, and the public URL is the reliable answer."""
    host = request.url.hostname
    public = public_origins(request)
    ordered = [
        origin_of(request),
        *(o for o in public if urlsplit(o).hostname == host),
        *public,
    ]
    return [f"{origin}/{area}/callback" for origin in dict.fromkeys(ordered)]


def pages_client_id(runtime: Runtime, candidates: list[str]) -> tuple[str, str] | None:
    """(client id, redirect URI) of our first-party public client: the newest registered
    with one of these exact callback addresses (api.pages.clients)."""
    with runtime.vault.sessions() as db:
        return choose_callback(pages_clients(db), candidates)


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


async def begin_login(request: Request, area: str) -> Response:
    runtime: Runtime = request.app.state.runtime
    candidates = callback_candidates(request, area)
    chosen = pages_client_id(runtime, candidates)
    if chosen is None:
        # No active pages' client has this address: VAULT_PUBLIC_URL (docs/deployment.md).
        log.warning("pages.no_client", redirect_uri=candidates[0], tried=len(candidates))
        return error_page(request, "login.failed", status=503, area=area)
    client_id, redirect_uri = chosen
    session = current_session(request) or store_of(request).new()
    session.login_state = secrets.token_urlsafe(24)
    session.login_verifier = secrets.token_urlsafe(48)
    session.login_area = area
    session.login_started = time.time()
    session.client_id = client_id
    session.login_redirect_uri = redirect_uri
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": AREA_SCOPES[area],
            "state": session.login_state,
            "code_challenge": _challenge(session.login_verifier),
            "code_challenge_method": "S256",
            "lang": lang_of(request),
        }
    )
    response = redirect(f"/oauth/authorize?{query}")
    set_session_cookie(request, response, session)
    return response


async def finish_login(request: Request, area: str) -> Response:
    session = current_session(request)
    state = request.query_params.get("state", "")
    code = request.query_params.get("code", "")
    if (
        session is None
        or session.login_state is None
        or session.login_area != area
        or not secrets.compare_digest(state.encode(), session.login_state.encode())
        or time.time() - session.login_started > store_of(request).login_seconds
        or not code
    ):
        return error_page(request, "login.failed", area=area)
    verifier = session.login_verifier or ""
    redirect_uri = session.login_redirect_uri or callback_uri(request, area)
    session.login_state = session.login_verifier = session.login_redirect_uri = None
    api = Api(request, None)
    response = await api.raw(
        "POST",
        "/oauth/token",
        form={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": session.client_id or "",
            "code_verifier": verifier,
        },
        auth=False,
    )
    if response.status_code != 200:
        log.info("pages.login_failed", area=area, status=response.status_code)
        return error_page(request, "login.failed", area=area)
    session = store_of(request).rotate(session)
    keep_tokens(session, response.json())
    session.area = area
    log.info("pages.signed_in", area=area, role=session.role)
    done = redirect(f"/{area}/")
    set_session_cookie(request, done, session)
    return done


async def logout(request: Request, area: str) -> Response:
    session = current_session(request)
    if session is not None:
        if session.refresh_token or session.access_token:
            api = Api(request, None)
            for token in (session.refresh_token, session.access_token):
                if token:
                    await api.raw(
                        "POST",
                        "/oauth/revoke",
                        form={"token": token, "client_id": session.client_id or ""},
                        auth=False,
                    )
        store_of(request).drop(session)
    response = redirect(f"/{area}/")
    response.delete_cookie(cookie_name(request, "rv_pages"), path="/", secure=True, httponly=True)
    return response


# -- CSRF ------------------------------------------------------------------------------------


def same_origin(request: Request) -> bool:
    """A POST from another site is refused even before the token is read."""
    sent = request.headers.get("origin")
    if sent is None or sent == "null":
        return sent is None
    parts = urlsplit(sent)
    origin = f"{parts.scheme}://{parts.netloc}"
    # Ours: where the request came to, or a configured public origin (behind a proxy).
    return origin == origin_of(request) or origin in public_origins(request)


def csrf_ok(request: Request, session: PageSession | None, token: str | None) -> bool:
    if session is None or not token or not same_origin(request):
        return False
    return secrets.compare_digest(token.encode(), session.csrf.encode())


# -- handlers ----------------------------------------------------------------------------------

Body = Callable[[PageSession, Api], Awaitable[Response]]
FormBody = Callable[[PageSession, Api, FormData], Awaitable[Response]]


def _guard(request: Request, area: str) -> PageSession | Response:
    session = current_session(request)
    if session is None or not session.signed_in:
        return render(request, "login.html", {"area_name": f"area.{area}"}, area=area)
    if session.role not in AREA_ROLES[area]:
        return error_page(request, "wrong_role", status=403, session=session, area=area)
    return session


async def _handled(request: Request, area: str, session: PageSession, call: Any) -> Response:
    try:
        response: Response = await call
    except SignedOut:
        session.access_token = None
        return redirect(f"/{area}/login")
    except ApiRefused as refused:
        status = refused.status if refused.status in (403, 404, 409, 422) else 400
        return error_page(
            request,
            "error.title",
            status=status,
            session=session,
            area=area,
            detail=refused.detail,
        )
    return response


async def view(request: Request, area: str, body: Body) -> Response:
    """A GET page: signed in with a role of this area, or the sign-in page."""
    session = _guard(request, area)
    if isinstance(session, Response):
        return session
    return await _handled(request, area, session, body(session, Api(request, session)))


async def posted(request: Request, area: str, body: FormBody) -> Response:
    """A form POST: same origin and the session's CSRF token, then the work."""
    session = current_session(request)
    try:
        form = await request.form(max_files=1, max_fields=64, max_part_size=1024 * 1024)
    except (ValueError, KeyError, HTTPException):
        return error_page(request, "csrf", status=400, session=session, area=area)
    try:
        token = form.get(CSRF_FIELD)
        if not csrf_ok(request, session, token if isinstance(token, str) else None):
            log.info("pages.csrf_refused", area=area, path=request.url.path)
            return error_page(request, "csrf", status=403, session=session, area=area)
        if session is None:  # pragma: no cover - csrf_ok refuses without a session
            return error_page(request, "csrf", status=403, area=area)
        guarded = _guard(request, area)
        if isinstance(guarded, Response):
            return guarded
        return await _handled(request, area, session, body(session, Api(request, session), form))
    finally:
        await form.close()  # uploaded files are spooled to temporary files


def form_text(form: FormData, name: str, limit: int = 500) -> str:
    value = form.get(name)
    return value.strip()[:limit] if isinstance(value, str) else ""
