"""Every problem type the API can answer with has a title in both languages and a page.

A `type` URI that leads nowhere, or a title that is just the slug, is what an integrator
meets when the code names a problem that api/http/problems.py does not know.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from access.runtime import init_runtime
from api.http.app import create_app
from api.http.problems import STATUSES, TITLES
from api.settings import Settings

ROOT = Path(__file__).parent.parent
PACKAGES = ("vault", "audit", "policies", "consent", "access", "api")
# The two ways the code names a problem: problem(request, "slug", …) and `slug = "slug"`
# on a domain error class (the gate's refusals, mapped by api/http).
_NAMED = re.compile(r'problem\(\s*request,\s*"([a-z-]+)"|^\s+slug = "([a-z-]+)"', re.MULTILINE)


def _named_slugs() -> set[str]:
    slugs: set[str] = set()
    for source in (f for package in PACKAGES for f in (ROOT / package).rglob("*.py")):
        for match in _NAMED.finditer(source.read_text(encoding="utf-8")):
            slugs.update(group for group in match.groups() if group)
    return slugs


def test_every_problem_the_code_names_has_titles_in_both_languages() -> None:
    named = _named_slugs()
    assert {"justification-required", "database-timeout", "policy-denied"} <= named
    assert sorted(named - set(TITLES)) == []
    assert set(STATUSES) == set(TITLES)
    for slug, title in TITLES.items():
        zh, en = title.text("zh"), title.text("en")
        assert 400 <= STATUSES[slug] < 600 and slug not in (zh, en)
        assert title.id not in (zh, en)  # the catalogue has it in both languages


def test_each_problem_type_has_its_page(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path}/v.db")
    init_runtime(settings).close()
    client = TestClient(create_app(settings, background=False))
    for slug in ("justification-required", "method-not-allowed", "database-timeout"):
        page = client.get(f"/problems/{slug}")
        assert page.status_code == 200, slug
        assert TITLES[slug].text("en") in page.text
