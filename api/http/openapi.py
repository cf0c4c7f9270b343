"""OpenAPI: every operation states its OAuth scopes, and resident-data ones their purposes,
its answers' schemas and media types, and every status it can answer.

The scopes come from each route's `require_scopes` dependency, the purposes from the policy
data, so the document cannot drift from what the service enforces. Refusals are problem
details (`Problem`, `application/problem+json`), except the OAuth endpoints', which answer
RFC 6749's own `{"error": ...}`. Which statuses an operation lists follows from what it
takes (`statuses_of`); tests/test_openapi_contract.py runs schemathesis against the
document to hold the service to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api.http import schemas
from api.http.params import (
    CURSOR_LENGTH,
    JUSTIFICATION_LENGTH,
    JUSTIFICATION_PATTERN,
    field_list_pattern,
)
from api.http.problems import PROBLEM_TYPE, Problem
from api.oauth.scopes import Scope
from vault.catalogue import Catalogue

PURPOSE_SCOPES = {Scope.RESIDENTS_READ.value, Scope.RESIDENTS_WRITE.value, Scope.STATS_READ.value}
REF = "#/components/schemas/{model}"
OAUTH_FORMS = ("/oauth/token", "/oauth/revoke", "/oauth/introspect")

_TEXT = {"schema": {"type": "string"}}
_CSV = {"schema": {"type": "string", "description": "RFC 4180 CSV, UTF-8, with a header row"}}


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"schema": {"$ref": REF.format(model=model.__name__)}}


# Answers that are not (only) JSON, as their real media types; "application/json" keeps the
# route's own model where it has one.
MEDIA: dict[tuple[str, str], dict[str, Any]] = {
    ("get", "/v1/exports/residents"): {
        "application/x-ndjson": {
            "schema": {"type": "string", "description": "one JSON record (Record) per line"}
        },
        "text/csv": _CSV,
    },
    ("get", "/v1/me/export"): {"application/json": None, "text/csv": _CSV},
    ("get", "/v1/audit/entries"): {"application/json": None, "text/csv": _CSV},
    ("get", "/v1/consents/{consent_id}/receipt"): {
        "application/jose": {
            "schema": {
                "type": "string",
                "description": "compact JWS (RFC 7515), EdDSA over the Kantara receipt fields",
                "pattern": r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$",
            }
        }
    },
    ("get", "/v1/receipt-keys"): {"application/jwk-set+json": _ref(schemas.Jwks)},
    ("get", "/oauth/jwks"): {"application/jwk-set+json": _ref(schemas.Jwks)},
    ("get", "/v1/audit/checkpoint"): {"text/plain": _TEXT},
    ("get", "/v1/audit/public-key"): {"text/plain": _TEXT},
    ("get", "/v1/me/accesses/{index}/proof"): {"text/plain": _TEXT},
}

# Statuses beyond those that follow from what an operation takes (`statuses_of`).
EXTRA: dict[tuple[str, str], set[int]] = {
    ("get", "/v1/audit/checkpoint"): {404},  # before the first checkpoint
    ("get", "/v1/audit/proofs/inclusion"): {404},  # beyond the latest tree
    ("get", "/v1/audit/proofs/consistency"): {404},
    ("get", "/readyz"): {503},
    ("post", "/v1/decisions/explain"): {404},
    ("get", "/v1/consents"): {404},
}

DESCRIPTIONS = {
    400: "Bad request (purpose-required)",
    401: "No valid access token (invalid-token), with WWW-Authenticate",
    403: "Refused: insufficient-scope, policy-denied, consent-required, suspended ...",
    404: "Not found, or outside the caller's scope (the same answer)",
    409: "Conflict with the stored record",
    413: "Request body too large (payload-too-large)",
    422: "A value outside its bounds (validation-error, with errors) or unknown-purpose",
    429: "Too many requests (rate-limited, budget-exhausted), with Retry-After",
    500: "Internal error (internal-error)",
    503: "Audit log, policy engine or database unavailable; nothing was returned",
}
_HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "the challenge"}},
    429: {"Retry-After": {"schema": {"type": "string"}, "description": "seconds to wait"}},
    503: {"Retry-After": {"schema": {"type": "string"}, "description": "seconds to wait"}},
}


def operation_id(route: APIRoute) -> str:
    """An operation's id: its handler's name, unique among the documented routes."""
    return route.name


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
    app: FastAPI,
    routers: Sequence[APIRouter],
    purposes: Mapping[str, Any],
    catalogue: Catalogue,
) -> None:
    """`routers`: those whose routes carry scopes (included routers keep their own routes);
    `purposes` and `catalogue`: what names of purposes, fields and categories are valid."""

    built: list[Any] = []  # the registry the cached document names

    def openapi() -> dict[str, Any]:
        # Purposes are added and retired while the service runs: the document follows.
        registry = {code: dict(spec) for code, spec in purposes.items()}
        key = sorted(
            (c, str(s.get("legal_basis")), bool(s.get("break_glass"))) for c, s in registry.items()
        )
        if app.openapi_schema and built == [key]:
            return app.openapi_schema
        built[:] = [key]
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
        codes = sorted(registry)
        _components(schema)
        secured = {
            (method.lower(), route.path_format): _scopes_of(route) or []
            for route in (r for router in routers for r in router.routes)
            if isinstance(route, APIRoute) and _scopes_of(route) is not None
            for method in route.methods or ()
        }
        names = Names(
            codes,
            list(catalogue.names),
            sorted(catalogue.categories),
            consented=[c for c in codes if registry[c].get("legal_basis") == "consent"],
            break_glass=[c for c in codes if registry[c].get("break_glass")],
        )
        for path, item in schema["paths"].items():
            for method, operation in item.items():
                _answers(method, path, operation, secured.get((method, path)))
                _named(path, operation, names, schema["components"]["schemas"])
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
                    for parameter in operation.get("parameters", []):
                        # ?purpose= names a registered purpose, as the header does.
                        if parameter["name"] == "purpose" and parameter["in"] == "query":
                            parameter["schema"] = {"type": "string", "enum": codes}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _components(schema: dict[str, Any]) -> None:
    """Problem (and the models only non-JSON answers name) in the components; FastAPI's
    own 422 description, which the service never answers, out."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    _, found = models_json_schema(
        [(m, "serialization") for m in (Problem, schemas.OAuthError, schemas.Jwks)],
        ref_template=REF,
    )
    components.update(found.get("$defs", {}))


def statuses_of(
    method: str, path: str, operation: dict[str, Any], scopes: list[str] | None
) -> set[int]:
    """What an operation can answer besides its success: every request may be too large,
    meet an internal error or an unavailable log, policy or database; one that takes
    values may get them refused; a protected one may be unauthenticated, refused or rate
    limited; one that names a resident or a record may find nothing; a write may conflict."""
    statuses = {413, 500, 503}
    parameters = operation.get("parameters", [])
    if parameters or "requestBody" in operation:
        statuses.add(422)
    if scopes is not None:
        statuses |= {401, 403, 429}
        if PURPOSE_SCOPES & set(scopes):
            statuses |= {400, 404, 422}
    if any(p["in"] == "path" for p in parameters):
        statuses.add(404)
    if method in {"post", "patch"} and scopes is not None:
        statuses |= {404, 409}
    return statuses | EXTRA.get((method, path), set())


def _problem_answer(status: int) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": DESCRIPTIONS.get(status, "Problem"),
        "content": {PROBLEM_TYPE: _ref(Problem)},
    }
    if status in _HEADERS:
        answer["headers"] = _HEADERS[status]
    return answer


def _answers(method: str, path: str, operation: dict[str, Any], scopes: list[str] | None) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    media = MEDIA.get((method, path))
    if media is not None:
        for code, answer in responses.items():
            if code.startswith("2"):
                kept = answer.get("content", {}).get("application/json")
                answer["content"] = {
                    kind: (kept if given is None else given)
                    for kind, given in media.items()
                    if given is not None or kept is not None
                }
    if path.startswith("/oauth/") or path.startswith("/.well-known/"):
        _oauth_answers(method, path, operation)
        return
    for status in sorted(statuses_of(method, path, operation, scopes)):
        responses[str(status)] = _problem_answer(status)


def _oauth_error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": _ref(schemas.OAuthError)}}


def _oauth_answers(method: str, path: str, operation: dict[str, Any]) -> None:
    """The OAuth endpoints answer RFC 6749's errors; only what precedes them (the body
    limit) and an internal error are problems."""
    responses: dict[str, Any] = operation["responses"]
    responses.pop("422", None)
    for status in (413, 500):
        responses[str(status)] = _problem_answer(status)
    if path in OAUTH_FORMS:
        responses["400"] = _oauth_error("invalid_request, invalid_grant, invalid_scope ...")
        responses["401"] = {
            **_oauth_error("invalid_client: the same answer for any failed client authentication"),
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
        }
        responses["429"] = {
            **_oauth_error("temporarily_unavailable: too many failed authentications"),
            "headers": _HEADERS[429],
        }
    if path == "/oauth/authorize":
        page = {"text/html": _TEXT}
        responses["422"] = _problem_answer(422)
        responses["302"] = {"description": "back to the client's redirect URI, with an error"}
        if method == "post":
            responses["303"] = {"description": "back to the client's redirect URI, with a code"}
            responses["429"] = {
                "description": "too many failed logins",
                "content": page,
                "headers": _HEADERS[429],
            }
        responses["400"] = {"description": "a form this server cannot read", "content": page}
        responses["403"] = {
            "description": "a redirect URI the client did not register; on POST also a form "
            "this server did not issue to this browser, or issued too long ago (login CSRF)",
            "content": page,
        }
        responses["404"] = {"description": "no such client", "content": page}


# -- names the service knows: what a schema-valid request may name ---------------------------

_LOG_CURSOR_PATHS = ("/v1/audit/entries", "/v1/me/accesses")


@dataclass(frozen=True)
class Names:
    purposes: list[str]
    fields: list[str]
    categories: list[str]
    consented: list[str]  # purposes whose legal basis is consent: those one may consent to
    break_glass: list[str]

    def purposes_of(self, model: str) -> list[str]:
        """The purposes a request body may name: a consent or a request for one only those
        resting on consent, a break-glass grant only break-glass ones."""
        if model.startswith(("MyGrant", "AssistedGrant", "RequestBody")):
            return self.consented
        if model.startswith("OpenBody"):
            return self.break_glass
        return self.purposes

    def field_list(self) -> str:
        return field_list_pattern(tuple(self.fields))


def _string_branch(schema: dict[str, Any]) -> dict[str, Any] | None:
    """The string schema of a property, directly or as the non-null branch of anyOf."""
    if schema.get("type") == "string":
        return schema
    return next((b for b in schema.get("anyOf", []) if b.get("type") == "string"), None)


def _named(path: str, operation: dict[str, Any], names: Names, components: dict[str, Any]) -> None:
    """Parameters and bodies that name a purpose, a field or a category take only the names
    the service knows; cursors are those it handed out; Justification is bounded as the
    service counts it (after percent-decoding)."""
    for parameter in operation.get("parameters", []):
        branch = _string_branch(parameter.get("schema", {}))
        if branch is None:
            continue
        name, where = parameter["name"], parameter["in"]
        if where == "query" and name == "fields":
            branch["pattern"] = names.field_list()
        elif where == "query" and name == "cursor":
            log = path.startswith(_LOG_CURSOR_PATHS)
            branch["format"] = "log-cursor" if log else "cursor"
            branch["maxLength"] = CURSOR_LENGTH
            parameter["description"] = (
                "the next_cursor of the page before, as given: a cursor this service did "
                "not hand out (to this caller) is a 422 validation-error"
            )
        elif where == "header" and name.lower() == "justification" and path != "/v1/break-glass":
            branch["pattern"] = JUSTIFICATION_PATTERN
            parameter["description"] = (
                f"percent-encoded UTF-8, at most {JUSTIFICATION_LENGTH} characters once "
                "decoded, no control characters"
            )
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    ref = str(body.get("schema", {}).get("$ref", ""))
    model_name = ref.rsplit("/", 1)[-1]
    model = components.get(model_name) if ref else None
    for prop_name, prop in (model or {}).get("properties", {}).items():
        if prop_name == "purpose" and (branch := _string_branch(prop)) is not None:
            branch["enum"] = names.purposes_of(model_name)
        for listed, known in (("fields", names.fields), ("categories", names.categories)):
            if prop_name != listed:
                continue
            array = (
                prop
                if prop.get("type") == "array"
                else next((b for b in prop.get("anyOf", []) if b.get("type") == "array"), None)
            )
            if array is not None:
                array.setdefault("items", {})["enum"] = known
