"""RFC 9457 problem details: the one place domain errors become HTTP responses.

`PROBLEMS` is the table: every domain error class (raised below `api/`, none of them
knowing HTTP) and the problem it answers with; the status is the slug's in `STATUSES`. One
handler, registered for each class in the table, builds the body (`type`
`<origin>/problems/<slug>`, an absolute URI under `VAULT_PUBLIC_URL`, else the request's own
base URL; the title; the status; `detail` = the error's message in the request's language,
else the problem's own; `errors` for a validation error, `budget` for a spent privacy
budget) and the
headers the error's facts call for: `Decision-Id` when it refused an access,
`Policy-Revision` when policy was asked, `Retry-After` when waiting will help. Routes
catch none of these errors; they raise, and this answers.
"""

from __future__ import annotations

import math
from typing import Any, Final

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from access.errors import (
    BreakGlassRequired,
    ConsentRequired,
    GateError,
    InvalidCursor,
    JustificationRequired,
    NotAnOperator,
    NotAResident,
    NotInScope,
    PolicyDenied,
    PurposeRequired,
    RateLimited,
    Suspended,
    UnknownPurpose,
)
from access.stats.service import BadStatsQuery, BudgetExhausted, UnknownMeasure
from audit.detection import LiftRefused, ReasonRequired
from audit.errors import (
    AuditError,
    AuditUnavailable,
    InvalidLogCursor,
    ProofUnavailable,
)
from consent.breakglass import BreakGlassConflict, BreakGlassError, BreakGlassNotFound
from consent.errors import ConsentConflict, ConsentError, ConsentNotFound, InvalidConsent
from policies import Decision
from vault.accounts import AccountConflict, AccountError, AccountNotFound
from vault.db import is_timeout
from vault.errors import (
    DistrictConflict,
    DistrictError,
    InvalidValue,
    ResidentNotFound,
    StaleRecord,
    UnknownField,
    ValidationFailed,
    VaultError,
)
from vault.i18n import Message, negotiate
from vault.places import PlaceConflict, PlaceError

log = structlog.get_logger(__name__)

PROBLEM_TYPE = "application/problem+json"
DATABASE_RETRY_AFTER_SECONDS = 2

# Each problem type's status, and its title (a catalogue message, shown in the request's
# language); the two tables name the same slugs.
STATUSES: Final[dict[str, int]] = {
    "purpose-required": 400,
    "unknown-purpose": 422,
    "validation-error": 422,
    "invalid-token": 401,
    "insufficient-scope": 403,
    "policy-denied": 403,
    "consent-required": 403,
    "break-glass-required": 403,
    "suspended": 403,
    "justification-required": 403,
    "not-found": 404,
    "method-not-allowed": 405,
    "proof-unavailable": 404,
    "conflict": 409,
    "payload-too-large": 413,
    "rate-limited": 429,
    "budget-exhausted": 429,
    "audit-unavailable": 503,
    "not-ready": 503,
    "policy-unavailable": 503,
    "database-timeout": 503,
    "internal-error": 500,
}

TITLES: Final[dict[str, Message]] = {
    "purpose-required": Message("problem.purpose-required.title"),
    "unknown-purpose": Message("problem.unknown-purpose.title"),
    "validation-error": Message("problem.validation-error.title"),
    "invalid-token": Message("problem.invalid-token.title"),
    "insufficient-scope": Message("problem.insufficient-scope.title"),
    "policy-denied": Message("problem.policy-denied.title"),
    "consent-required": Message("problem.consent-required.title"),
    "break-glass-required": Message("problem.break-glass-required.title"),
    "suspended": Message("problem.suspended.title"),
    "justification-required": Message("problem.justification-required.title"),
    "not-found": Message("problem.not-found.title"),
    "method-not-allowed": Message("problem.method-not-allowed.title"),
    "proof-unavailable": Message("problem.proof-unavailable.title"),
    "conflict": Message("problem.conflict.title"),
    "payload-too-large": Message("problem.payload-too-large.title"),
    "rate-limited": Message("problem.rate-limited.title"),
    "budget-exhausted": Message("problem.budget-exhausted.title"),
    "audit-unavailable": Message("problem.audit-unavailable.title"),
    "not-ready": Message("problem.not-ready.title"),
    "policy-unavailable": Message("problem.policy-unavailable.title"),
    "database-timeout": Message("problem.database-timeout.title"),
    "internal-error": Message("problem.internal-error.title"),
}

# Each domain error and its problem, in the order of docs/api.md's list ("Common slugs"),
# then the rest. An error is answered by the nearest class of its own in the table (a
# subclass before its base). The problems that are no domain error's (invalid-token and
# insufficient-scope from api.oauth, payload-too-large and method-not-allowed from HTTP,
# policy-unavailable from api.http.observability, database-timeout below) have their own.
PROBLEMS: Final[dict[type[Exception], str]] = {
    PurposeRequired: "purpose-required",
    UnknownPurpose: "unknown-purpose",
    ValidationFailed: "validation-error",  # one entry per field in `errors`
    InvalidValue: "validation-error",
    UnknownField: "validation-error",
    InvalidConsent: "validation-error",
    ConsentError: "validation-error",
    BreakGlassError: "validation-error",
    BadStatsQuery: "validation-error",
    InvalidCursor: "validation-error",  # the gate's: a resident id the caller never saw
    InvalidLogCursor: "validation-error",  # the audit log's: a leaf index it never gave out
    PolicyDenied: "policy-denied",  # with the policy's reason
    GateError: "policy-denied",
    ConsentRequired: "consent-required",
    NotInScope: "not-found",  # the same whether absent or out of scope
    ResidentNotFound: "not-found",
    ConsentNotFound: "not-found",
    BreakGlassNotFound: "not-found",
    UnknownMeasure: "not-found",
    RateLimited: "rate-limited",  # with Retry-After
    AuditUnavailable: "audit-unavailable",  # nothing is returned without its audit entry
    BreakGlassRequired: "break-glass-required",
    JustificationRequired: "justification-required",
    Suspended: "suspended",
    NotAResident: "insufficient-scope",  # a route for residents' own records
    NotAnOperator: "insufficient-scope",  # the admin API: an operator's account only
    BudgetExhausted: "budget-exhausted",  # with `budget` and Retry-After
    ProofUnavailable: "proof-unavailable",
    LiftRefused: "conflict",  # not suspended: nothing to lift
    ReasonRequired: "validation-error",  # a lift names why
    PlaceError: "validation-error",  # the district's places and organisations
    PlaceConflict: "conflict",  # e.g. retiring a place people live in
    DistrictError: "validation-error",  # the district's purposes and mandates
    DistrictConflict: "conflict",  # e.g. a purpose code already registered
    AccountError: "validation-error",  # the district's staff accounts
    AccountConflict: "conflict",  # a username in use, an account already disabled
    AccountNotFound: "not-found",
    StaleRecord: "conflict",
    ConsentConflict: "conflict",
    BreakGlassConflict: "conflict",
    AuditError: "internal-error",
    VaultError: "internal-error",
}


def _route(request: Request) -> str | None:
    """The route's template (/v1/residents/{resident_id}), never the path with its ids."""
    route = request.scope.get("route")
    return getattr(route, "path", None)


def lang_of(request: Request) -> str:
    """The language of a request's answer (`zh` or `en`), from its Accept-Language."""
    return negotiate(None, None, request.headers.get("accept-language"))


def slug_of(error: BaseException) -> str:
    """The problem a domain error is: its nearest class in `PROBLEMS`."""
    for kind in type(error).__mro__:
        slug = PROBLEMS.get(kind)
        if slug is not None:
            return slug
    return "internal-error"


class FieldError(BaseModel):
    """One refused value of a `validation-error`: which, and why."""

    field: str = Field(description="the parameter, header or body member (a.b for nested)")
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details (`application/problem+json`): every refusal of the API."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(
        description="absolute URI of the problem type, <origin>/problems/<slug>; "
        "the page there explains it"
    )
    title: str = Field(description="the problem type's title, in the request's language")
    status: int = Field(ge=100, le=599)
    detail: str = Field(description="this occurrence, in the request's language")
    errors: list[FieldError] | None = Field(
        default=None, description="validation-error: one entry per refused value"
    )
    budget: dict[str, Any] | None = Field(
        default=None, description="budget-exhausted: the caller's privacy budget"
    )


def public_base(request: Request) -> str:
    """Where problem types live: the configured public origin (`VAULT_PUBLIC_URL`, its
    first), else the origin this request reached us by."""
    runtime = getattr(request.app.state, "runtime", None)
    origins = getattr(getattr(runtime, "settings", None), "public_origins", ())
    if origins:
        return str(origins[0])
    return str(request.base_url).rstrip("/")


def problem_type(request: Request, slug: str) -> str:
    return f"{public_base(request)}/problems/{slug}"


def problem(
    request: Request, slug: str, detail: str | None = None, status: int | None = None, **extra: Any
) -> JSONResponse:
    code = STATUSES.get(slug, status or 500)
    lang = lang_of(request)
    title = TITLES.get(slug)
    body: dict[str, Any] = {
        "type": problem_type(request, slug),
        "title": title.text(lang) if title is not None else slug,
        "status": status or code,
        # Every problem says what happened: the occurrence's own words, else the type's.
        "detail": detail or _default_detail(slug, lang),
        **extra,
    }
    return JSONResponse(body, status_code=status or code, media_type=PROBLEM_TYPE)


def _default_detail(slug: str, lang: str) -> str:
    known = slug in TITLES or slug == "http-error"
    return Message(f"problem.{slug if known else 'http-error'}.detail").text(lang)


def _members(error: Exception, slug: str, detail: str | None, lang: str) -> dict[str, Any]:
    """The members beyond the standard ones: `errors` for a validation error (one per
    field), `budget` for a spent privacy budget."""
    members: dict[str, Any] = {}
    if isinstance(error, ValidationFailed):
        members["errors"] = [{"field": p.field, "message": p.message(lang)} for p in error.problems]
    elif slug == "validation-error" and detail is not None:
        field = getattr(error, "field", None)
        members["errors"] = [{"field": field if isinstance(field, str) else "", "message": detail}]
    if isinstance(error, BudgetExhausted):
        members["budget"] = error.budget.as_dict()
    return members


def domain_problem(request: Request, error: Exception) -> JSONResponse:
    """The problem details of one domain error (the handler of every class in `PROBLEMS`)."""
    slug = slug_of(error)
    lang = lang_of(request)
    message = getattr(error, "message", None)
    detail = message.text(lang) if isinstance(message, Message) else None
    response = problem(request, slug, detail, **_members(error, slug, detail, lang))
    decision_id = getattr(error, "decision_id", None)
    if isinstance(decision_id, str):
        response.headers["Decision-Id"] = decision_id
    decision = getattr(error, "decision", None)
    if isinstance(decision, Decision):
        response.headers["Policy-Revision"] = decision.revision
    retry_after = getattr(error, "retry_after", None)
    if isinstance(retry_after, int | float):
        response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return response


def install_problem_handlers(app: FastAPI) -> None:
    async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
        return domain_problem(request, exc)

    for kind in PROBLEMS:
        app.add_exception_handler(kind, _domain_error)

    @app.exception_handler(SQLAlchemyError)
    async def _database(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        # A statement over VAULT_DATABASE_STATEMENT_TIMEOUT_MS, a lock wait or no free pool
        # slot: its transaction rolled back whole, so a retry is safe.
        if not is_timeout(exc):
            return problem(request, "internal-error")
        log.warning("database.timeout", error=type(exc).__name__, route=_route(request))
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.database_timeouts.inc()
        response = problem(request, "database-timeout")
        response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
        return response

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": ".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]),
                "message": e["msg"],
            }
            for e in exc.errors()
        ]
        return problem(request, "validation-error", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # A body that is not even JSON (bad UTF-8, say): refused like any invalid body.
            return problem(
                request, "validation-error", errors=[{"field": "body", "message": str(exc.detail)}]
            )
        slug = {404: "not-found", 413: "payload-too-large", 405: "method-not-allowed"}.get(
            exc.status_code, "http-error"
        )
        response = problem(request, slug, status=exc.status_code)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        if exc.status_code == 405:
            # Every method of every route at this path, not only the first route's (RFC 9110).
            response.headers["Allow"] = ", ".join(allowed_methods(request.app, request.url.path))
        return response


def _full_routes(routes: list[Any], prefix: str = "") -> list[tuple[str, Any]]:
    """(full path, route) of every route, through included routers kept whole."""
    found: list[tuple[str, Any]] = []
    for route in routes:
        original = getattr(route, "original_router", None)
        if original is not None:
            found += _full_routes(original.routes, prefix + route.include_context.prefix)
        elif isinstance(getattr(route, "path", None), str):
            found.append((prefix + route.path, route))
    return found


def allowed_methods(app: Any, path: str) -> list[str]:
    """The methods the routes at `path` take, as an `Allow` header lists them: those of
    the most literal templates that match (`/v1/decisions/explain` is not
    `/v1/decisions/{decision_id}`, though both match it)."""
    patterns: list[tuple[Any, int, set[str]]] | None = getattr(app.state, "allow_patterns", None)
    if patterns is None:
        found: dict[str, tuple[Any, int, set[str]]] = {}
        for full, route in _full_routes(list(app.routes)):
            methods = getattr(route, "methods", None)
            if methods:
                regex, _, convertors = compile_path(full)
                entry = found.setdefault(regex.pattern, (regex, len(convertors), set()))
                entry[2].update(methods)
        patterns = app.state.allow_patterns = list(found.values())
    matching = [(params, methods) for regex, params, methods in patterns if regex.match(path)]
    fewest = min((params for params, _ in matching), default=0)
    return sorted({m for params, methods in matching if params == fewest for m in methods})


def _where(exc: BaseException) -> str:
    """The innermost frame of a traceback, as module:line (no message, no values: an
    exception's text may quote a query's parameters)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "?"
    frame = tb.tb_frame
    return f"{frame.f_globals.get('__name__', '?')}:{tb.tb_lineno}"


class UnhandledErrors:
    """An exception no handler answered: one structlog line (its type and where, never its
    text) and a 500 `internal-error` problem, so nothing reaches uvicorn's traceback
    printer. A response already under way (a streamed export) is cut short instead."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as exc:
            route = getattr(scope.get("route"), "path", None)
            log.error(
                "request.failed",
                error=type(exc).__name__,
                where=_where(exc),
                method=scope.get("method"),
                route=route,
                answered=started,
            )
            if not started:
                await problem(Request(scope), "internal-error")(scope, receive, send)
