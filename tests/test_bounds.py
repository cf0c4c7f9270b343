"""Every value a caller sends has declared bounds, and a value outside them is a clear 422
that writes nothing: huge integers in paths and queries (they gave 500), and huge strings
and headers (a 60,000-character Purpose was stored whole in two entries per request).

The walk covers every operation of the OpenAPI document and every page route, so a route
added later without bounds fails here.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select

from api.http.params import CODE_LENGTH, JUSTIFICATION_LENGTH, MAX_INTEGER
from audit import EntryDraft
from audit.log import DETAIL_TEXT_LENGTH, _bounded, _bounded_details
from audit.models import AuditEntry
from audit.queries import encode_cursor
from tests.route_walk import World, operations, page_routes, world_fixture

world = world_fixture()

HUGE = 1180591620717411303424  # 2**70, the red team's number
PROBLEM = "application/problem+json"


def _flat(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter's schema with `anyOf: [{...}, {null}]` folded in."""
    flat = dict(schema)
    for option in schema.get("anyOf", []):
        flat.update({k: v for k, v in option.items() if k != "type"})
        flat.setdefault("types", []).append(option.get("type"))
    flat.setdefault("types", []).append(schema.get("type"))
    return flat


def _closed(schema: dict[str, Any]) -> bool:
    """A string the schema bounds: a length, a list of values, a date, or an anchored
    pattern without unbounded repetition (`^(json|csv)$`)."""
    pattern = str(schema.get("pattern", ""))
    return (
        "maxLength" in schema
        or "enum" in schema
        or schema.get("format") == "date-time"
        or (
            pattern.startswith("^") and pattern.endswith("$") and not re.search(r"[*+]|,}", pattern)
        )
    )


def _refs(schema: Any) -> set[str]:
    """The component names a schema refers to, however deep."""
    if isinstance(schema, dict):
        found = {str(schema["$ref"]).rsplit("/", 1)[-1]} if "$ref" in schema else set()
        return found.union(*(_refs(v) for v in schema.values()))
    if isinstance(schema, list):
        return set().union(*(_refs(v) for v in schema))
    return set()


def _request_models(document: dict[str, Any]) -> set[str]:
    """Every model a request body names, and the models those name (answers are not inputs)."""
    components = document["components"]["schemas"]
    waiting = _refs(
        [op.get("requestBody", {}) for item in document["paths"].values() for op in item.values()]
    )
    seen: set[str] = set()
    while waiting:
        name = waiting.pop()
        if name not in seen:
            seen.add(name)
            waiting |= _refs(components[name]) - seen
    return seen


def _parameters(world: World) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    return [
        (method, path, operation, parameter)
        for method, path, operation in operations(world)
        for parameter in operation.get("parameters", [])
    ]


def _fill(path: str, operation: dict[str, Any], name: str, value: Any) -> str:
    """The path with `name` set to `value` and any other path parameter to a harmless one."""
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path":
            other = "1" if "integer" in _flat(parameter["schema"])["types"] else "x"
            path = path.replace(
                "{" + parameter["name"] + "}", str(value) if parameter["name"] == name else other
            )
    return path


def _bearer(world: World, operation: dict[str, Any]) -> str | None:
    scopes = next(iter(operation.get("security") or [{}]), {}).get("oauth2", [])
    return world.bearer_for(scopes)


def _refused(response: Any, name: str) -> None:
    assert response.status_code == 422, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["type"].endswith("/problems/validation-error")
    assert any(name.lower() in e["field"].lower() for e in body["errors"]), body


# -- the OpenAPI document declares every bound ------------------------------------------


def test_every_integer_and_string_parameter_declares_its_bounds(world: World) -> None:
    unbounded = []
    for method, path, _, parameter in _parameters(world):
        schema = _flat(parameter.get("schema", {}))
        if "integer" in schema["types"] and ("maximum" not in schema or "minimum" not in schema):
            unbounded.append(f"{method} {path} {parameter['name']} (integer)")
        if "string" in schema["types"] and not _closed(schema):
            unbounded.append(f"{method} {path} {parameter['name']} (string)")
    assert not unbounded, unbounded


def test_every_string_and_integer_in_a_request_body_declares_its_bounds(world: World) -> None:
    document = world.client.get("/openapi.json").json()
    components = document["components"]["schemas"]
    unbounded = []
    for model in sorted(_request_models(document)):
        schema = components[model]
        for name, prop in schema.get("properties", {}).items():
            flat = _flat(prop)
            items = _flat(prop.get("items", {})) if "array" in flat["types"] else None
            if "array" in flat["types"] and "maxItems" not in flat:
                unbounded.append(f"{model}.{name} (list)")
            for where, part in ((name, flat), (f"{name}[]", items)):
                if part is None:
                    continue
                if "string" in part["types"] and not (
                    "maxLength" in part
                    or "enum" in part
                    or "const" in part
                    or part.get("format") == "date-time"
                ):
                    unbounded.append(f"{model}.{where} (string)")
                if "integer" in part["types"] and "maximum" not in part:
                    unbounded.append(f"{model}.{where} (integer)")
    assert not unbounded, unbounded


# -- and the service keeps them ------------------------------------------------------------


def test_a_huge_integer_anywhere_is_a_422_problem_not_a_500(world: World) -> None:
    tried = 0
    for method, path, operation, parameter in _parameters(world):
        if "integer" not in _flat(parameter["schema"])["types"]:
            continue
        name = parameter["name"]
        target = _fill(path, operation, name, HUGE)
        params = {name: HUGE} if parameter["in"] == "query" else None
        response = world.call(method, target, _bearer(world, operation), params=params)
        _refused(response, name)
        tried += 1
    assert tried >= 8  # since, index, tree_size, first, second, limits, entries/{index} ...


@pytest.mark.parametrize(
    ("path", "params", "signed_in", "name"),
    [
        ("/v1/audit/checkpoints", {"since": HUGE}, False, "since"),
        (f"/v1/audit/entries/{HUGE}", None, True, "index"),
        (f"/v1/me/accesses/{HUGE}/proof", None, True, "index"),
        (f"/v1/me/accesses/{MAX_INTEGER + 1}/proof", None, True, "index"),
    ],
)
def test_the_red_teams_huge_integers(
    world: World, path: str, params: dict[str, int] | None, signed_in: bool, name: str
) -> None:
    bearer = world.bearers["resident"] if signed_in else None
    _refused(world.call("GET", path, bearer, params=params), name)


def test_a_cursor_naming_a_huge_index_is_a_422_not_a_500(world: World) -> None:
    # A log cursor is base64 of a leaf index: a forged one must not reach SQLite either.
    for index in (MAX_INTEGER + 1, 2**63, HUGE):
        response = world.call(
            "GET",
            "/v1/audit/entries",
            world.bearers["auditor"],
            params={"cursor": encode_cursor(index)},
        )
        _refused(response, "cursor")


def test_the_largest_declared_index_is_answered_as_absent(world: World) -> None:
    response = world.call("GET", f"/v1/me/accesses/{MAX_INTEGER}/proof", world.bearers["resident"])
    assert response.status_code == 404
    assert response.json()["type"].endswith("/problems/not-found")


def test_a_huge_string_anywhere_is_a_422_problem(world: World) -> None:
    tried = 0
    for method, path, operation, parameter in _parameters(world):
        schema = _flat(parameter["schema"])
        if "string" not in schema["types"] or "maxLength" not in schema:
            continue
        name = parameter["name"]
        huge = "a" * (schema["maxLength"] + 1)
        target = _fill(path, operation, name, huge)
        params = {name: huge} if parameter["in"] == "query" else None
        headers = {name: huge} if parameter["in"] == "header" else {}
        response = world.call(
            method, target, _bearer(world, operation), params=params, headers=headers
        )
        _refused(response, name)
        tried += 1
    assert tried >= 30


def test_page_routes_answer_a_huge_index_with_an_error_page(world: World) -> None:
    world.sign_in("resident", username="resident.guardian")
    tried = 0
    for method, path in page_routes(world):
        if "{index}" not in path:
            continue
        response = world.client.request(method, path.replace("{index}", str(HUGE)))
        assert response.status_code == 422, (path, response.status_code)
        assert response.headers["content-type"].startswith("text/html")
        assert "超出允许的范围" in response.text
        tried += 1
    assert tried == 2  # the proof file and the verification page


def test_an_oversized_purpose_header_is_refused_and_never_stored(world: World) -> None:
    before = world.entries_count()
    purpose = "subsidy-review" + "x" * 60_000
    token = world.bearers["org_civil_affairs"]
    for path in ("/v1/residents", "/v1/stats/residents", "/v1/exports/residents"):
        response = world.call("GET", path, token, purpose=purpose)
        _refused(response, "Purpose")
    assert world.entries_count() == before
    with world.runtime.vault.sessions() as session:
        longest = session.scalar(select(func.max(func.length(AuditEntry.purpose))))
    assert longest is not None and longest <= CODE_LENGTH


@pytest.mark.parametrize("purpose", ["=HYPERLINK(1)", "@SUM(A1)", "-2+3", "+1", " \t=1", "用途"])
def test_a_purpose_outside_the_registrys_format_is_refused(world: World, purpose: str) -> None:
    token = world.bearers["org_civil_affairs"]
    response = world.call("GET", "/v1/residents", token, headers={"Purpose": purpose.encode()})
    _refused(response, "Purpose")


def test_an_unknown_but_well_formed_purpose_is_refused_by_policy_and_recorded(
    world: World,
) -> None:
    token = world.bearers["org_civil_affairs"]
    response = world.call("GET", "/v1/residents", token, purpose="not-a-registered-purpose")
    assert response.status_code == 422
    assert response.json()["type"].endswith("/problems/unknown-purpose")
    recorded = world.entries_of(response.headers["x-request-id"])
    assert recorded and all(e.purpose == "not-a-registered-purpose" for e in recorded)


def test_an_oversized_justification_is_refused(world: World) -> None:
    token = world.bearers["org_civil_affairs"]
    before = world.entries_count()
    long_reason = "理" * (JUSTIFICATION_LENGTH + 1)
    response = world.call(
        "GET",
        "/v1/exports/residents",
        token,
        purpose="subsidy-review",
        headers={"Justification": quote(long_reason)},
    )
    _refused(response, "Justification")
    assert world.entries_count() == before


# -- the log's own guarantee -----------------------------------------------------------------


@given(st.text(min_size=0, max_size=3000), st.text(min_size=0, max_size=5000))
def test_the_log_never_stores_a_value_beyond_its_bounds(purpose: str, note: str) -> None:
    stored = _bounded(purpose, CODE_LENGTH)
    assert len(stored) <= CODE_LENGTH
    assert stored == purpose or (len(purpose) > CODE_LENGTH and stored.endswith("…"))
    details = _bounded_details({"note": note, "nested": [{"note": note}]})
    assert len(details["note"]) <= DETAIL_TEXT_LENGTH
    assert len(details["nested"][0]["note"]) <= DETAIL_TEXT_LENGTH
    assert (details["note"] == note) == (len(note) <= DETAIL_TEXT_LENGTH)


def test_an_entry_recorded_with_huge_values_is_stored_bounded(world: World) -> None:
    runtime = world.runtime
    with runtime.transaction() as session:
        [entry_id] = runtime.audit.record(
            session,
            [
                EntryDraft(
                    action="test.bounds",
                    outcome="allowed",
                    channel="api",
                    kind="event",
                    purpose="p" * 60_000,
                    user="u" * 60_000,
                    details={"given": "d" * 60_000},
                )
            ],
        )
    with runtime.vault.sessions() as session:
        stored = session.scalars(select(AuditEntry).where(AuditEntry.entry_id == entry_id)).one()
    assert stored.purpose is not None and len(stored.purpose) == CODE_LENGTH
    assert stored.user is not None and len(stored.user) == 128
    assert len(stored.details["given"]) == DETAIL_TEXT_LENGTH
    assert len(stored.canonical) < 3 * DETAIL_TEXT_LENGTH + 2000
