"""RFC 9457 problem details: the one place domain errors become HTTP responses."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from audit import AuditUnavailable
from vault.db import is_timeout
from vault.errors import (
    InvalidValue,
    ResidentNotFound,
    StaleRecord,
    UnknownField,
    ValidationFailed,
    VaultError,
)

log = structlog.get_logger(__name__)

PROBLEM_TYPE = "application/problem+json"
DATABASE_RETRY_AFTER_SECONDS = 2

TITLES: dict[str, tuple[int, str, str]] = {
    "purpose-required": (400, "缺少用途声明", "Purpose required"),
    "unknown-purpose": (422, "未登记的用途", "Unknown purpose"),
    "validation-error": (422, "输入有误", "Validation error"),
    "invalid-token": (401, "令牌无效", "Invalid token"),
    "insufficient-scope": (403, "权限范围不足", "Insufficient scope"),
    "policy-denied": (403, "策略不允许", "Denied by policy"),
    "consent-required": (403, "需要居民同意", "Consent required"),
    "break-glass-required": (403, "须先登记紧急访问", "Break-glass grant required"),
    "suspended": (403, "账号已暂停，待审计复核", "Suspended pending review"),
    "justification-required": (403, "须说明理由", "Justification required"),
    "not-found": (404, "未找到", "Not found"),
    "method-not-allowed": (405, "不支持该请求方法", "Method not allowed"),
    "proof-unavailable": (404, "暂无证明", "Proof unavailable"),
    "conflict": (409, "记录已被修改", "The record was changed"),
    "payload-too-large": (413, "请求体过大", "Payload too large"),
    "rate-limited": (429, "请求过于频繁", "Rate limited"),
    "budget-exhausted": (429, "隐私预算已用尽", "Privacy budget exhausted"),
    "audit-unavailable": (
        503,
        "审计日志不可用，未返回任何数据",
        "Audit log unavailable; nothing was returned",
    ),
    "not-ready": (503, "服务未就绪", "Not ready"),
    "policy-unavailable": (
        503,
        "访问策略暂不可用，未返回任何数据",
        "Access policy unavailable; nothing was returned",
    ),
    "database-timeout": (
        503,
        "数据库繁忙，本次请求未执行，请稍后重试",
        "Database busy; nothing was done, retry later",
    ),
    "internal-error": (500, "服务器内部错误", "Internal error"),
}


def _route(request: Request) -> str | None:
    """The route's template (/v1/residents/{resident_id}), never the path with its ids."""
    route = request.scope.get("route")
    return getattr(route, "path", None)


def _lang(request: Request) -> str:
    accept = request.headers.get("accept-language", "zh")
    return "en" if accept.lower().startswith("en") else "zh"


def problem(
    request: Request, slug: str, detail: str | None = None, status: int | None = None, **extra: Any
) -> JSONResponse:
    code, zh, en = TITLES.get(slug, (status or 500, slug, slug))
    body: dict[str, Any] = {
        "type": f"/problems/{slug}",
        "title": en if _lang(request) == "en" else zh,
        "status": status or code,
        **extra,
    }
    if detail:
        body["detail"] = detail
    return JSONResponse(body, status_code=status or code, media_type=PROBLEM_TYPE)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ValidationFailed)
    async def _validation(request: Request, exc: ValidationFailed) -> JSONResponse:
        lang = _lang(request)
        errors = [{"field": p.field, "message": p.message(lang)} for p in exc.problems]
        return problem(request, "validation-error", errors=errors)

    @app.exception_handler(InvalidValue)
    async def _invalid(request: Request, exc: InvalidValue) -> JSONResponse:
        message = exc.message_en if _lang(request) == "en" else exc.message_zh
        return problem(request, "validation-error", errors=[{"field": "", "message": message}])

    @app.exception_handler(UnknownField)
    async def _unknown_field(request: Request, exc: UnknownField) -> JSONResponse:
        return problem(
            request, "validation-error", errors=[{"field": exc.name, "message": "unknown field"}]
        )

    @app.exception_handler(ResidentNotFound)
    async def _not_found(request: Request, exc: ResidentNotFound) -> JSONResponse:
        return problem(request, "not-found")

    @app.exception_handler(StaleRecord)
    async def _stale(request: Request, exc: StaleRecord) -> JSONResponse:
        return problem(request, "conflict")

    @app.exception_handler(AuditUnavailable)
    async def _audit_unavailable(request: Request, exc: AuditUnavailable) -> JSONResponse:
        return problem(request, "audit-unavailable")

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

    @app.exception_handler(VaultError)
    async def _vault_error(request: Request, exc: VaultError) -> JSONResponse:
        return problem(request, "internal-error")

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
