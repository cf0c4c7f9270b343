"""What people do on the pages, in a real browser (Chromium, headless).

Each page is photographed at phone and desktop width (artifacts/screenshots/) and checked
with axe-core: no serious or critical accessibility violation.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import time
from typing import Any

import httpx
from playwright.sync_api import expect
from sqlalchemy import func, select

from audit.models import AuditEntry
from consent.models import Consent, ConsentRevocation
from tests.browser.conftest import capture, sign_in
from tests.browser.server import PagesServer
from vault.models import Building, Household, Organisation, Resident, Room

PURPOSE = "property-notice"


def _demo_consent(pages: PagesServer) -> tuple[str, str, str]:
    """(organisation, resident id, consent id) of the demo's consent to a property company."""
    with pages.runtime.vault.sessions() as session:
        consent = session.scalars(
            select(Consent)
            .outerjoin(ConsentRevocation, ConsentRevocation.consent_id == Consent.id)
            .where(Consent.purpose == PURPOSE, ConsentRevocation.consent_id.is_(None))
        ).first()
        assert consent is not None
        return consent.recipient, consent.resident_id, consent.id


def _organisation_name(pages: PagesServer, org: str) -> str:
    with pages.runtime.vault.sessions() as session:
        found = session.get(Organisation, org)
        assert found is not None
        return found.name_zh


def _wait_for_checkpoint(pages: PagesServer) -> None:
    """Until a signed head covers every entry written so far (the interval is 0.3 s)."""
    with pages.runtime.vault.sessions() as session:
        written = session.scalar(select(func.count()).select_from(AuditEntry)) or 0
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        text = httpx.get(f"{pages.url}/v1/audit/checkpoint").text
        if text.count("\n") >= 3 and int(text.split("\n")[1]) >= written:
            return
        time.sleep(0.2)
    raise AssertionError("no checkpoint covered the entries")


def _organisation_reads(pages: PagesServer, org: str) -> tuple[dict[str, str], str]:
    """The company's system lists the residents who consented (it sees pseudonyms)."""
    headers = {"Authorization": f"Bearer {pages.client_token(org)}", "Purpose": PURPOSE}
    listing = httpx.get(f"{pages.url}/v1/residents", headers=headers)
    assert listing.status_code == 200, listing.text
    items = listing.json()["items"]
    assert len(items) == 1
    return headers, items[0]["resident_id"]


def test_resident_verifies_an_access_then_revokes_and_the_next_read_is_refused(
    pages: PagesServer, page: Any
) -> None:
    org, resident_id, consent_id = _demo_consent(pages)
    org_name = _organisation_name(pages, org)
    headers, seen_as = _organisation_reads(pages, org)
    read = httpx.get(f"{pages.url}/v1/residents/{seen_as}", headers=headers)
    assert read.status_code == 200, read.text
    _wait_for_checkpoint(pages)

    sign_in(page, pages, "portal", pages.user("resident", resident_id=resident_id))
    expect(page.get_by_role("heading", level=1)).to_have_text("我的信息")
    capture(page, "portal-record")

    page.get_by_role("link", name="谁查看了我的信息").click()
    entry = page.locator("li.entry", has_text=org_name).first
    expect(entry).to_contain_text("物业服务通知")
    expect(entry).to_contain_text("您的同意")
    capture(page, "portal-accesses")

    entry.get_by_role("link", name=re.compile("^验证")).click()
    expect(page.locator("#server-result")).to_contain_text("已验证")
    page.get_by_role("button", name="在浏览器中验证").click()
    expect(page.locator("#browser-result")).to_have_text("浏览器验证通过。")
    capture(page, "portal-verify")

    page.get_by_role("link", name="我的授权同意").click()
    card = page.locator(f"#consent-{consent_id}")
    expect(card).to_contain_text(org_name)
    card.get_by_role("button", name=re.compile("^撤回同意")).click()
    expect(page.get_by_role("status")).to_contain_text("已撤回")
    expect(page.locator("section[aria-labelledby=group-revoked]")).to_contain_text(org_name)
    capture(page, "portal-consents")
    page.locator(f"#consent-{consent_id}").get_by_role("link", name=re.compile("^查看回执")).click()
    expect(page.locator("#receipt-signature")).to_contain_text("有效")
    expect(page.locator("article.receipt")).to_contain_text("已撤回")
    capture(page, "portal-receipt")

    refused = httpx.get(f"{pages.url}/v1/residents/{seen_as}", headers=headers)
    assert refused.status_code == 403
    assert refused.json()["type"].endswith("/problems/consent-required")


def test_guardian_pages_in_english_and_large_text(pages: PagesServer, page: Any) -> None:
    guardian = pages.user("resident", username="resident.guardian")
    sign_in(page, pages, "portal", guardian)
    page.get_by_role("link", name="我的子女").click()
    expect(page.locator("section.card")).to_have_count(len(guardian["children"]))
    capture(page, "portal-children")
    page.get_by_role("link", name="下载我的数据").click()
    with page.expect_download() as download:
        page.get_by_role("link", name="下载 CSV 表格").click()
    assert download.value.suggested_filename == "my-data.csv"
    capture(page, "portal-download")
    page.get_by_role("link", name="申请更正").click()
    page.get_by_label("需要更正的项目").select_option("phone")
    page.get_by_label("正确的内容").fill("13800000000")
    page.get_by_role("button", name="提交").click()
    expect(page.get_by_role("status")).to_contain_text("已提交更正申请")
    capture(page, "portal-correction")

    page.get_by_role("link", name="English").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("heading", level=1)).to_have_text("Ask for a correction")
    page.get_by_role("link", name="Large text").click()
    expect(page.locator("html")).to_have_class("large")
    page.get_by_role("link", name="My record").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("My record")
    capture(page, "portal-record-en-large")


def _resident_of(pages: PagesServer, community: str) -> tuple[str, str]:
    """A resident of the community and their ID number (the test peeks at the vault)."""
    with pages.runtime.vault.sessions() as session:
        resident_id = session.scalars(
            select(Resident.id)
            .join(Household, Household.id == Resident.household_id)
            .join(Room, Room.id == Household.room_id)
            .join(Building, Building.id == Room.building_id)
            .where(Building.community_id == community, Resident.is_decoy.is_(False))
            .order_by(Resident.id)
        ).first()
        assert resident_id is not None
        values = pages.runtime.vault.store.read(session, resident_id, ["id_number"])
    return resident_id, str(values["id_number"])


def test_worker_records_an_assisted_consent_and_prints_the_receipt(
    pages: PagesServer, page: Any
) -> None:
    worker = pages.user("community_worker")
    resident_id, id_number = _resident_of(pages, worker["jurisdiction"]["community"])
    sign_in(page, pages, "desk", worker)
    capture(page, "desk-find")

    page.get_by_label("号码").fill(id_number)
    page.get_by_label("办理用途").select_option("counter-service")
    page.get_by_role("button", name="查询").click()
    expect(page.get_by_role("heading", level=2, name=resident_id)).to_be_visible()
    expect(page.get_by_role("region", name="策略允许您看到的内容")).to_contain_text("明文")
    assert id_number not in page.url
    capture(page, "desk-resident")

    form = b"%PDF-1.4\n% signed consent form, scanned at the counter\n"
    page.get_by_label("见证人", exact=True).fill("王见证")
    page.get_by_label(re.compile("^扫描的同意书")).set_input_files(
        files=[{"name": "form.pdf", "mimeType": "application/pdf", "buffer": form}]
    )
    page.get_by_role("button", name="登记同意").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("授权同意回执")
    expect(page.locator("article.receipt")).to_contain_text(hashlib.sha256(form).hexdigest())
    expect(page.locator("article.receipt")).to_contain_text("窗口代办")
    expect(page.locator("#receipt-signature")).to_contain_text("有效")
    capture(page, "desk-receipt")
    with pages.runtime.vault.sessions() as session:
        recorded = session.scalars(
            select(Consent).where(Consent.resident_id == resident_id, Consent.channel == "assisted")
        ).one()
        assert recorded.witness == "王见证"
        assert recorded.evidence_sha256 == hashlib.sha256(form).hexdigest()

    # Withdrawing is as easy at the counter: back to the resident, revoke with a witness.
    page.get_by_role("link", name="查找居民").click()
    page.get_by_label("号码").fill(id_number)
    page.get_by_label("办理用途").select_option("counter-service")
    page.get_by_role("button", name="查询").click()
    assisted = page.get_by_role("listitem").filter(has_text="窗口代办")
    assisted.get_by_label("撤回见证人").fill("李见证")
    assisted.get_by_role("button", name=re.compile("^代为撤回同意")).click()
    expect(page.locator("article.receipt")).to_contain_text("已撤回")

    page.get_by_role("link", name="更正申请队列").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("更正申请队列")
    capture(page, "desk-corrections")


def test_auditor_filters_the_log_and_exports_csv(pages: PagesServer, page: Any) -> None:
    org = "org_civil_affairs"  # a department reads under a statutory duty
    listed = httpx.get(
        f"{pages.url}/v1/residents",
        params={"limit": 5},
        headers={"Authorization": f"Bearer {pages.client_token(org)}", "Purpose": "subsidy-review"},
    )
    assert listed.status_code == 200, listed.text
    sign_in(page, pages, "console", pages.user("auditor"))
    page.get_by_label("机构").select_option(org)
    page.get_by_role("button", name="筛选").click()
    rows = page.locator("table.log tbody tr")
    expect(rows.first).to_contain_text(_organisation_name(pages, org))
    for row in rows.all():
        expect(row).to_contain_text(_organisation_name(pages, org))
    capture(page, "console-search")

    with page.expect_download() as download:
        page.get_by_role("link", name="导出 CSV").click()
    text = download.value.path().read_text(encoding="utf-8")
    exported = list(csv.DictReader(io.StringIO(text)))
    assert exported
    assert {row["organisation"] for row in exported} == {org}

    page.get_by_role("link", name="统计图").click()
    expect(page.locator("svg.bars").first).to_be_visible()
    capture(page, "console-charts")
    page.get_by_role("link", name="异常情况").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("异常情况")
    capture(page, "console-anomalies")
    page.get_by_role("link", name="签名树头").click()
    expect(page.locator("table.log tbody tr").first).to_contain_text("有效")
    expect(page.locator("table.log")).not_to_contain_text("无效")
    capture(page, "console-heads")


def test_sign_in_pages_are_accessible(pages: PagesServer, page: Any) -> None:
    page.goto(f"{pages.url}/portal/")
    expect(page.get_by_role("heading", level=1)).to_have_text("请先登录")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="跳到正文")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    capture(page, "portal-sign-in")
    page.get_by_role("link", name="登录", exact=True).click()
    page.wait_for_url("**/oauth/authorize**")
    capture(page, "oauth-login-form")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement && document.activeElement.id")
    assert focused in ("username", "password")
