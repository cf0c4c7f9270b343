"""RFC 9457 problem details: the one place domain errors become HTTP responses."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from vault.errors import (
    InvalidValue,
    ResidentNotFound,
    StaleRecord,
    UnknownField,
    ValidationFailed,
    VaultError,
)

PROBLEM_TYPE = "application/problem+json"

TITLES: dict[str, tuple[int, str, str]] = {
    "validation-error": (422, "输入有误", "Validation error"),
    "not-found": (404, "未找到", "Not found"),
    "conflict": (409, "记录已被修改", "The record was changed"),
    "payload-too-large": (413, "请求体过大", "Payload too large"),
    "internal-error": (500, "服务器内部错误", "Internal error"),
}


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
        slug = {404: "not-found", 413: "payload-too-large"}.get(exc.status_code, "http-error")
        return problem(request, slug, status=exc.status_code)
