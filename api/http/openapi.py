"""OpenAPI: every operation states its OAuth scopes, and resident-data ones their purposes.

The scopes come from each route's `require_scopes` dependency, the purposes from the policy
data, so the document cannot drift from what the service enforces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from api.oauth.scopes import Scope

PURPOSE_SCOPES = {Scope.RESIDENTS_READ.value, Scope.RESIDENTS_WRITE.value, Scope.STATS_READ.value}


def _scopes_of(route: APIRoute) -> list[str] | None:
    """The scopes a route requires, wherever among its dependencies (and theirs) they are."""
    waiting = list(route.dependant.dependencies)
    while waiting:
        dependency = waiting.pop(0)
        required = getattr(dependency.call, "required_scopes", None)
        if required is not None:
            return list(required)
        waiting.extend(dependency.dependencies)
    return None


def install_openapi(
    app: FastAPI, routers: Sequence[APIRouter], purposes: Mapping[str, Any]
) -> None:
    """`routers`: those whose routes carry scopes (included routers keep their own routes)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            routes=app.routes,
            description="居民数据保险库 API / Resident data vault API. Contract: docs/api.md.",
        )
        scopes = {s.value: f"{s.zh} / {s.en}" for s in Scope}
        schema.setdefault("components", {})["securitySchemes"] = {
            "oauth2": {
                "type": "oauth2",
                "flows": {
                    "clientCredentials": {"tokenUrl": "/oauth/token", "scopes": scopes},
                    "authorizationCode": {
                        "authorizationUrl": "/oauth/authorize",
                        "tokenUrl": "/oauth/token",
                        "refreshUrl": "/oauth/token",
                        "scopes": scopes,
                    },
                },
            }
        }
        codes = sorted(purposes)
        for route in (r for router in routers for r in router.routes):
            if not isinstance(route, APIRoute):
                continue
            required = _scopes_of(route)
            if required is None:
                continue
            for method in route.methods or ():
                operation = schema["paths"].get(route.path_format, {}).get(method.lower())
                if operation is None:
                    continue
                operation["security"] = [{"oauth2": required}]
                if PURPOSE_SCOPES & set(required):
                    operation["x-purposes"] = codes
                    operation.setdefault("parameters", []).append(
                        {
                            "name": "Purpose",
                            "in": "header",
                            "required": False,
                            "description": "用途代码（或 purpose 查询参数）/ purpose code "
                            "(or the purpose query parameter); one of x-purposes",
                            "schema": {"type": "string", "enum": codes},
                        }
                    )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
