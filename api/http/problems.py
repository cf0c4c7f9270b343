"""RFC 9457 problem details: the one place domain errors become HTTP responses.

`PROBLEMS` is the table: every domain error class (raised below `api/`, none of them
knowing HTTP) and the problem it answers with; the status is the slug's in `STATUSES`. One
handler, registered for each class in the table, builds the body (`type`
`/problems/<slug>`, the title, the status, `detail` = the error's message in the request's
language, `errors` for a validation error, `budget` for a spent privacy budget) and the
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
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

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


def problem(
    request: Request, slug: str, detail: str | None = None, status: int | None = None, **extra: Any
) -> JSONResponse:
    code = STATUSES.get(slug, status or 500)
    title = TITLES.get(slug)
    body: dict[str, Any] = {
        "type": f"/problems/{slug}",
        "title": title.text(lang_of(request)) if title is not None else slug,
        "status": status or code,
        **extra,
    }
    if detail:
        body["detail"] = detail
    return JSONResponse(body, status_code=status or code, media_type=PROBLEM_TYPE)


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
            {"field": ".".join(str(p) for p in e["loc"][1:]), "message": e["msg"]}
            for e in exc.errors()
        ]
        return problem(request, "validation-error", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug = {404: "not-found", 413: "payload-too-large", 405: "method-not-allowed"}.get(
            exc.status_code, "http-error"
        )
        return problem(request, slug, status=exc.status_code)
