"""Browser tests: Playwright driving Debian's Chromium (headless) against a real uvicorn
server with demo data. Under CI=true a missing Chromium or Playwright fails the run;
elsewhere these tests skip."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.browser.server import PagesServer, run_pages_server

CHROMIUM = os.environ.get("VAULT_CHROMIUM", "/usr/lib/chromium/chromium")
IN_CI = os.environ.get("CI", "").lower() == "true"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
VIEWPORTS = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1280, "height": 900}}


def _missing() -> str | None:
    try:
        import axe_playwright_python  # noqa: F401
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"playwright or axe-playwright-python is not installed ({exc.name})"
    if not Path(CHROMIUM).exists():
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    missing = _missing()
    if missing:
        if IN_CI:
            pytest.fail(f"CI=true but {missing}: browser tests cannot be skipped")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory, chromium: Any) -> Iterator[PagesServer]:
    home = tmp_path_factory.mktemp("pages")
    with run_pages_server(home / "home", f"sqlite:///{home / 'vault.db'}") as server:
        yield server


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    # A resident's browser asks for Chinese (Playwright's default Accept-Language is en-US,
    # which the pages now honour when no `?lang=` or cookie says otherwise).
    context = chromium.new_context(
        viewport=VIEWPORTS["desktop"], accept_downloads=True, locale="zh-CN"
    )
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on(
        "console",
        lambda m: errors.append(m.text) if m.type == "error" and "favicon" not in m.text else None,
    )
    yield opened
    context.close()
    assert not errors, f"errors in the page: {errors}"


class Reachable(Protocol):
    url: str


def sign_in(page: Any, server: Reachable, area: str, user: dict[str, Any]) -> None:
    """Through the service's own login form (OAuth authorization code with PKCE)."""
    page.goto(f"{server.url}/{area}/")
    page.get_by_role("link", name="登录", exact=True).click()
    page.wait_for_url("**/oauth/authorize**")
    page.get_by_label("用户名").fill(user["username"])
    page.get_by_label("密码").fill(user["password"])
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(f"{server.url}/{area}/")


def capture(page: Any, name: str) -> None:
    """Screenshots at phone and desktop width, and an axe-core check at each: no serious
    or critical violation. Results are kept beside the screenshots."""
    from axe_playwright_python.sync_playwright import Axe

    shots = ARTIFACTS / "screenshots"
    reports = ARTIFACTS / "axe"
    shots.mkdir(parents=True, exist_ok=True)
    reports.mkdir(parents=True, exist_ok=True)
    axe = Axe()
    bad: list[str] = []
    # A click that navigates returns before the new document exists; measuring then
    # finds no document element.
    page.wait_for_load_state("load")
    for label, size in VIEWPORTS.items():
        page.set_viewport_size(size)
        width = page.evaluate("document.documentElement.scrollWidth")
        if width > size["width"]:
            bad.append(f"{label}: the page is {width} px wide, wider than the screen")
        page.screenshot(path=str(shots / f"{name}-{label}.png"), full_page=True)
        results = axe.run(page)
        violations = results.response["violations"]
        (reports / f"{name}-{label}.json").write_text(
            json.dumps(violations, ensure_ascii=False, indent=1), encoding="utf-8"
        )
        bad += [
            f"{label}: {v['id']} ({v['impact']}): {v['help']} at "
            f"{[n['target'] for n in v['nodes']][:3]}"
            for v in violations
            if v["impact"] in ("serious", "critical")
        ]
    page.set_viewport_size(VIEWPORTS["desktop"])
    assert not bad, "\n".join(bad)
