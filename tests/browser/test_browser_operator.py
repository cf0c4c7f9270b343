"""The operator console in a real browser (Chromium, headless): the demo operator adds a
street and a community under it, grants a mandate and revokes it, and adds an account
whose one-time password is shown once. Each page is photographed and checked with
axe-core, as the other areas' pages are."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import VIEWPORTS, capture, sign_in
from tests.browser.server import PagesServer

ORG, PURPOSE = "org_health", "subsidy-review"  # a department the demo gives no such mandate

# The one refusal the test provokes answers 409, which Chromium reports on the console.
REFUSED = "the server responded with a status of 409"


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    """The package's page (one context, Chinese), with the provoked refusal's 409 allowed."""
    context = chromium.new_context(viewport=VIEWPORTS["desktop"], locale="zh-CN")
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and "favicon" not in m.text and REFUSED not in m.text
            else None
        ),
    )
    yield opened
    context.close()
    assert not errors, f"errors in the page: {errors}"


def test_operator_adds_places_grants_and_revokes_a_mandate_and_adds_an_account(
    pages: PagesServer, page: Any
) -> None:
    sign_in(page, pages, "operator", pages.user("operator"))
    expect(page.get_by_role("heading", level=1)).to_have_text("地点")
    capture(page, "operator-places")

    # A street, then a community under it.
    page.get_by_label("类型", exact=True).select_option("street")
    page.get_by_label("代码", exact=True).fill("st_browser")
    page.get_by_label("名称", exact=True).fill("浏览器街道")
    page.get_by_role("button", name="添加地点").click()
    expect(page.get_by_role("status")).to_have_text("地点已添加。")
    page.get_by_label("类型", exact=True).select_option("community")
    page.get_by_label("代码", exact=True).fill("cm_browser")
    page.get_by_label("名称", exact=True).fill("浏览器社区")
    page.get_by_label("上级", exact=True).fill("st_browser")
    page.get_by_role("button", name="添加地点").click()
    row = page.locator("#place-cm_browser")
    expect(row).to_contain_text("浏览器社区")
    expect(row).to_contain_text("st_browser")

    # The same id again: the API's refusal in Chinese, and what was typed is still there.
    page.get_by_label("类型", exact=True).select_option("community")
    page.get_by_label("代码", exact=True).fill("cm_browser")
    page.get_by_label("名称", exact=True).fill("又一个社区")
    page.get_by_label("上级", exact=True).fill("st_browser")
    page.get_by_role("button", name="添加地点").click()
    expect(page.get_by_role("alert")).to_contain_text("cm_browser")
    expect(page.get_by_label("名称", exact=True)).to_have_value("又一个社区")

    # A mandate, in force on the list, then revoked.
    page.get_by_role("link", name="授权", exact=True).click()
    page.get_by_label("机构", exact=True).select_option(ORG)
    page.get_by_label("目的", exact=True).select_option(PURPOSE)
    page.get_by_label("查看", exact=True).check()
    page.get_by_role("button", name="授予授权").click()
    expect(page.get_by_role("status")).to_contain_text("授权已授予")
    granted = page.locator(f"#mandate-{ORG}-{PURPOSE}")
    expect(granted).to_contain_text("查看")
    capture(page, "operator-mandates")
    granted.get_by_role("button", name=re.compile("^撤销授权")).click()
    expect(page.get_by_role("status")).to_contain_text("授权已撤销")
    expect(page.locator(f"#mandate-{ORG}-{PURPOSE}")).to_have_count(0)
    page.get_by_role("link", name="显示历史").click()
    expect(page.locator(f"tr[id^='mandate-{ORG}-{PURPOSE}-']")).to_contain_text("user:ops.demo")

    # An account: its one-time password on the answer to the form, and nowhere after.
    page.get_by_role("link", name="账号", exact=True).click()
    page.get_by_label("用户名", exact=True).fill("audit.browser")
    page.get_by_label("所属机构", exact=True).select_option("org_civil_affairs")
    page.get_by_label("角色", exact=True).select_option("auditor")
    page.get_by_role("button", name="添加账号").click()
    shown = page.locator("#one-time-password")
    expect(shown).to_have_text(re.compile(r"^[\w-]{16,}$"))
    password = shown.inner_text()
    expect(page.locator("#account-audit\\.browser")).to_contain_text("审计员")
    capture(page, "operator-accounts")
    assert password not in page.url
    assert all(password not in c["value"] for c in page.context.cookies())
    page.goto(f"{pages.url}/operator/accounts")  # a fresh GET: the password is not shown again
    expect(page.locator("#account-audit\\.browser")).to_be_visible()
    expect(page.locator("#one-time-password")).to_have_count(0)
    assert password not in page.content()

    page.get_by_role("link", name="机构", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("机构")
    capture(page, "operator-organisations")
