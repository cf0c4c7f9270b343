"""One table maps each domain error to its problem (api/http/problems.py, issue 18).

Every problem the docs name is served at `/problems/<slug>` and has the status the docs
give; every domain error class is answered by the problem its class names; the routes catch
no domain error (they raise, and the one handler answers); and that handler puts the
error's facts (message in the request's language, field, budget, decision id, wait) where
docs/api.md says they go.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from datetime import timedelta
from pathlib import Path
from typing import Any, get_args, get_type_hints

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from access.errors import NotInScope, PolicyDenied, RateLimited
from access.runtime import init_runtime
from access.stats.service import BadStatsQuery, Budget, BudgetExhausted
from access.subjects import Access, Subject
from api.http.app import create_app
from api.http.problems import PROBLEMS, STATUSES, TITLES, install_problem_handlers
from audit.errors import InvalidLogCursor
from consent.breakglass import BreakGlassConflict, BreakGlassError
from consent.errors import InvalidConsent
from vault.errors import FieldProblem, ValidationFailed
from vault.i18n import Message
from vault.models import utcnow

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = ("vault", "audit", "policies", "consent", "access")  # the floors below api/
DOCS = sorted((ROOT / "docs").glob("*.md"))
_LINKED = re.compile(r"/problems/([a-z][a-z-]*)")
_STATUS = re.compile(r'"status":\s*(\d{3})')
_LISTED = re.compile(r"^\s+- `([a-z][a-z-]*)` \((\d{3})", re.MULTILINE)


def documented() -> dict[str, int | None]:
    """Each slug the docs name, with the status they give it (None where they give none):
    docs/api.md's "Common slugs" list, and every `/problems/<slug>` in docs/*.md (with the
    `"status"` of the example body it appears in, if any)."""
    api = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    common = api[api.index("Common slugs:") :]
    common = common[: common.index("\n- ")]  # the list ends at the next top-level item
    slugs: dict[str, int | None] = {slug: int(status) for slug, status in _LISTED.findall(common)}
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for match in _LINKED.finditer(text):
            body = text[match.end() : text.find("}", match.end()) + 1]
            status = _STATUS.search(body)
            if status is not None:
                slugs[match.group(1)] = int(status.group(1))
            else:
                slugs.setdefault(match.group(1), None)
    return slugs


def test_the_docs_name_the_problems_they_list() -> None:
    slugs = documented()
    assert len([s for s in slugs.values() if s is not None]) >= 11  # the Common slugs list
    assert {"purpose-required", "rate-limited", "audit-unavailable", "database-timeout"} <= set(
        slugs
    )


@pytest.mark.parametrize(("slug", "status"), sorted(documented().items()))
def test_each_documented_problem_has_its_status(slug: str, status: int | None) -> None:
    assert slug in TITLES, f"docs name /problems/{slug}; api/http/problems.py does not"
    if status is not None:
        assert STATUSES[slug] == status, slug


def test_each_documented_problem_is_served(tmp_path: Path) -> None:
    # Whatever settings class the app takes (the settings are being split out by floor).
    settings_type = next(t for t in get_args(get_type_hints(create_app)["settings"]) if t)
    settings = settings_type(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path}/v.db")
    init_runtime(settings).close()
    client = TestClient(create_app(settings, background=False))
    for slug in sorted({*documented(), *PROBLEMS.values()}):
        page = client.get(f"/problems/{slug}")
        assert page.status_code == 200, slug
        status, zh, en = STATUSES[slug], TITLES[slug].text("zh"), TITLES[slug].text("en")
        assert zh in page.text and en in page.text and str(status) in page.text


def _domain_errors() -> list[type[Exception]]:
    """Every exception class defined in the floors below api/."""
    found: set[type[Exception]] = set()
    for package in DOMAIN:
        root = importlib.import_module(package)
        modules = [root.__name__] + [
            m.name for m in pkgutil.walk_packages(root.__path__, prefix=f"{package}.")
        ]
        for name in modules:
            module = importlib.import_module(name)
            for value in vars(module).values():
                if (
                    isinstance(value, type)
                    and issubclass(value, Exception)
                    and value.__module__.split(".")[0] in DOMAIN
                ):
                    found.add(value)
    return sorted(found, key=lambda kind: f"{kind.__module__}.{kind.__qualname__}")


def _answered_by(kind: type[BaseException]) -> str | None:
    return next((PROBLEMS[k] for k in kind.__mro__ if k in PROBLEMS), None)


def test_the_table_agrees_with_the_classes_and_titles() -> None:
    for kind, slug in PROBLEMS.items():
        assert slug in TITLES, (kind, slug)
        named = getattr(kind, "slug", slug)
        assert named == slug, f"{kind.__qualname__} says {named}, the table {slug}"


def test_every_domain_error_with_a_slug_is_answered_by_it() -> None:
    errors = _domain_errors()
    assert len(errors) > 20
    for kind in errors:
        slug = getattr(kind, "slug", None)
        if isinstance(slug, str):
            assert _answered_by(kind) == slug, f"{kind.__module__}.{kind.__qualname__}"


# -- routes catch no domain error -----------------------------------------------------------


def _domain_class_names() -> set[str]:
    names: set[str] = set()
    for package in DOMAIN:
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            names.update(n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef))
    return names


def _caught(handler: ast.ExceptHandler) -> list[ast.expr]:
    if handler.type is None:
        return []
    return list(handler.type.elts) if isinstance(handler.type, ast.Tuple) else [handler.type]


def _imported_from(tree: ast.Module) -> dict[str, str]:
    """Local name -> the module it was imported from (`from access.gate import GateError`)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = alias.name
    return names


def domain_catches(path: Path, classes: set[str]) -> list[str]:
    """`file:line name` for each `except` in a file that names a domain error class."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = _imported_from(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ExceptHandler):
            continue
        for caught in _caught(node):
            if isinstance(caught, ast.Name):
                name, origin = caught.id, imported.get(caught.id, "")
            elif isinstance(caught, ast.Attribute):
                name, origin = caught.attr, ast.unparse(caught.value)
                origin = imported.get(origin.split(".")[0], origin)
            else:
                continue
            if origin.split(".")[0] in DOMAIN or (name in classes and not origin):
                found.append(f"{path.name}:{node.lineno} {name}")
    return found


def test_routes_catch_no_domain_error() -> None:
    classes = _domain_class_names()
    assert {"GateError", "ConsentError", "BudgetExhausted", "ProofUnavailable"} <= classes
    routes = sorted((ROOT / "api" / "http" / "routes").glob("*.py"))
    assert len(routes) >= 7
    assert [hit for path in routes for hit in domain_catches(path, classes)] == []


def test_the_walk_finds_a_domain_catch(tmp_path: Path) -> None:
    route = tmp_path / "route.py"
    route.write_text(
        "from access.gate import GateError\nimport consent\n"
        "try:\n    pass\nexcept (KeyError, GateError):\n    pass\n"
        "try:\n    pass\nexcept consent.ConsentError:\n    pass\n"
        "try:\n    pass\nexcept ValueError:\n    pass\n",
        encoding="utf-8",
    )
    hits = domain_catches(route, _domain_class_names())
    assert [hit.split(" ")[1] for hit in hits] == ["GateError", "ConsentError"]


# -- the one handler ------------------------------------------------------------------------


def _app(error: Exception) -> TestClient:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/raise")
    def _raise() -> None:
        raise error

    return TestClient(app)


def _get(error: Exception, lang: str = "zh-CN") -> tuple[int, dict[str, Any], dict[str, str]]:
    response = _app(error).get("/raise", headers={"Accept-Language": lang})
    assert response.headers["content-type"].startswith("application/problem+json")
    return response.status_code, response.json(), dict(response.headers)


ACCESS = Access(subject=Subject(type="grid_worker", user="gw"), purpose="x", request_id="r")
TYPES = "http://testserver/problems"  # no VAULT_PUBLIC_URL: the request's own base URL


def test_a_refusal_carries_its_message_decision_id_and_wait() -> None:
    limited = RateLimited(
        Message("error.gate.rate-limited"), decision_id=ACCESS.decision_id, retry_after=2.2
    )
    status, body, headers = _get(limited)
    assert (status, body["type"], body["title"]) == (429, f"{TYPES}/rate-limited", "请求过于频繁")
    assert body["detail"] == "请求过于频繁，请稍后再试"
    assert headers["decision-id"] == ACCESS.decision_id and headers["retry-after"] == "3"
    status, body, _ = _get(limited, "en-GB,en;q=0.9")
    assert (body["title"], body["detail"]) == ("Rate limited", "too many requests")


def test_not_found_says_the_same_with_or_without_a_decision() -> None:
    _, outside, headers = _get(NotInScope(None, decision_id=ACCESS.decision_id))
    assert outside == {
        "type": f"{TYPES}/not-found",
        "title": "未找到",
        "status": 404,
        "detail": "未找到",
    }
    assert "policy-revision" not in headers


def test_a_refusal_before_any_access_has_no_decision_id() -> None:
    status, body, headers = _get(PolicyDenied(Message("error.break-glass.workers-only")))
    assert (status, body["detail"]) == (403, "紧急访问仅限社区工作者和网格员")
    assert "decision-id" not in headers


def test_validation_errors_name_their_field() -> None:
    status, body, headers = _get(BadStatsQuery("by", Message("error.stats.by"), None, ACCESS))
    assert status == 422 and body["type"].endswith("/problems/validation-error")
    assert body["errors"] == [{"field": "by", "message": "by 应为 community、grid 或 building"}]
    assert headers["decision-id"] == ACCESS.decision_id
    _, body, _ = _get(InvalidLogCursor("invalid cursor"), "en")
    assert body["errors"] == [{"field": "cursor", "message": "invalid cursor"}]
    _, body, _ = _get(
        BreakGlassError(Message("error.break-glass.minutes", {"most": 240}), field="minutes")
    )
    assert body["errors"] == [{"field": "minutes", "message": "有效期须在1到240分钟之间"}]
    refused = InvalidConsent(Message("error.consent.unknown-field", {"name": "x"}), field="fields")
    _, body, _ = _get(refused, "en")
    assert body["errors"] == [{"field": "fields", "message": "unknown field 'x'"}]
    _, body, _ = _get(refused)
    assert body["errors"] == [{"field": "fields", "message": "未知字段：'x'"}]
    problem = FieldProblem("phone", "phone-length", Message("validation.phone-length"))
    _, body, _ = _get(ValidationFailed([problem]))
    assert body["errors"] == [{"field": "phone", "message": "手机号码应为11位"}]


def test_a_spent_budget_comes_with_the_budget_and_the_wait() -> None:
    renews = utcnow() + timedelta(hours=1)
    budget = Budget(period="2026-12", total=3.0, spent=3.0, renews_at=renews)
    status, body, headers = _get(BudgetExhausted(budget, None, ACCESS))
    assert (status, body["type"]) == (429, f"{TYPES}/budget-exhausted")
    assert body["budget"] == budget.as_dict() and "恢复" in body["detail"]
    assert 3500 <= int(headers["retry-after"]) <= 3600
    assert headers["decision-id"] == ACCESS.decision_id


def test_break_glass_review_errors_are_their_own_problems() -> None:
    status, body, _ = _get(BreakGlassConflict(Message("error.break-glass.reviewed")))
    assert (status, body["type"], body["detail"]) == (409, f"{TYPES}/conflict", "已复核")
