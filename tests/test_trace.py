"""Traceable exports: a leaked part of an export names the request it came from.

One demo service serves the module. It makes 100 exports over HTTP, of overlapping
populations, by two organisations, 40 of them by the same organisation with the same
filters (the hard case: the same rows under the same pseudonyms). Then `resident-vault
trace` is run on leaked pieces, and the decoys planted in the exports are looked for
everywhere else.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import httpx
import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from typer.testing import CliRunner

from access.exports.batches import PLAN_KEPT, ExportPlan, ExportPlanRow
from access.exports.fingerprints import (
    ExportKey,
    Fingerprint,
    column_order,
    csv_cells,
    csv_line,
    csv_observations,
    expected,
    fingerprint_master,
    mark_key,
    ndjson_line,
    ndjson_observations,
)
from access.exports.records import ExportRecord, open_export
from access.exports.trace import read_leak, score_exports
from access.gate import Gate
from access.subjects import Access, organisation_subject
from api.cli.main import app as cli_app
from audit.models import AuditEntry
from audit.queries import EntryFilter, accesses_per_day, out_of_hours, sensitive_reads
from policies import EmbeddedEngine, load_bundle
from policies.district import follow_district
from tests.demo_server import DemoServer, demo_server_on
from vault.interfaces import Keyring
from vault.models import Building, Household, Resident, Room, utcnow
from vault.pseudonyms import Pseudonyms

CIVIL, HEALTH = "org_civil_affairs", "org_health"
PURPOSES = {CIVIL: "subsidy-review", HEALTH: "public-health-followup"}
# (organisation, format, filters, how many): 100 exports in all, populations overlapping.
PLAN: list[tuple[str, str, dict[str, str], int]] = [
    (CIVIL, "ndjson", {}, 30),
    (CIVIL, "csv", {}, 10),
    (CIVIL, "ndjson", {"community": "cm_xingfu"}, 10),
    (HEALTH, "ndjson", {}, 25),
    (HEALTH, "csv", {}, 10),
    (HEALTH, "ndjson", {"community": "cm_hexie"}, 10),
    (CIVIL, "csv", {"fields": "name,phone,birth_date,address,low_income_status"}, 5),
]
# Generous limits: this module exports on purpose, far beyond a normal hour's bulk reads.
ENV = {
    "VAULT_RATE_LIMIT_BULK": "100000",
    "VAULT_ALERT_SUSPEND_ON": "none",
    "VAULT_ALERT_SCAN_SECONDS": "3600",
}


@dataclass
class Made:
    export_id: str
    request_id: str
    organisation: str
    format: str
    filters: dict[str, str]
    text: str


@dataclass
class Vault:
    server: DemoServer
    exports: list[Made]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def vault(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_template: str | None,
) -> Iterator[Vault]:
    home = tmp_path_factory.mktemp("trace-demo")
    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)
    try:
        with demo_server_on(request.param, home, postgres_template) as server:
            tokens = {org: server.client_token(org) for org in PURPOSES}
            made = []
            for organisation, fmt, filters, count in PLAN:
                for _ in range(count):
                    made.append(export(server, tokens[organisation], organisation, fmt, filters))
            yield Vault(server, made)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def export(
    server: DemoServer, token: str, organisation: str, fmt: str, filters: dict[str, str]
) -> Made:
    request_id = f"req-test-{random.getrandbits(40):010x}"
    response = httpx.get(
        f"{server.url}/v1/exports/residents",
        params={"format": fmt, **filters},
        headers={
            "Authorization": f"Bearer {token}",
            "Purpose": PURPOSES[organisation],
            "Justification": quote("年度复核"),
            "X-Request-ID": request_id,
        },
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return Made(
        response.headers["Export-Id"], request_id, organisation, fmt, filters, response.text
    )


def run_cli(vault: Vault, args: list[str]) -> Any:
    """The CLI in process; the server's logging is put back afterwards (the CLI points
    structlog at the runner's captured stderr, which closes when it returns)."""
    settings_ = vault.server.settings
    env = {"VAULT_HOME": str(settings_.home), "VAULT_DATABASE_URL": settings_.database_url or ""}
    saved = structlog.get_config()
    try:
        return CliRunner().invoke(cli_app, args, env=env)
    finally:
        structlog.configure(**saved)


def said(result: Any) -> list[str]:
    """The lines the command wrote to stderr for the operator: the in-process server's
    background threads (the checkpointer) may log a JSON event into the same stream."""
    return [line for line in result.stderr.strip().splitlines() if not line.startswith('{"')]


def trace(vault: Vault, tmp_path: Path, body: str | bytes, *args: str) -> Any:
    path = tmp_path / "leaked.txt"
    path.write_bytes(body.encode() if isinstance(body, str) else body)
    return run_cli(vault, [*args, "trace", str(path), "--json"])


def rows_of(made: Made) -> tuple[str, list[str]]:
    lines = made.text.splitlines(keepends=True)
    if made.format == "csv":
        return lines[0], lines[1:]
    return "", lines


def traced(result: Any) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


# -- tracing ---------------------------------------------------------------------------------


def test_a_leaked_50_row_subset_names_the_request_among_100_exports(
    vault: Vault, tmp_path: Path
) -> None:
    assert len(vault.exports) == 100
    rng = random.Random(20261202)
    # The hard case: 30 exports by one organisation with the same filters, same rows.
    same = [
        m for m in vault.exports if (m.organisation, m.format, m.filters) == (CIVIL, "ndjson", {})
    ]
    for target in rng.sample(same, 3):
        _, rows = rows_of(target)
        leaked = sorted(rng.sample(range(len(rows)), 50))
        answer = traced(trace(vault, tmp_path, "".join(rows[i] for i in leaked)))
        best = answer["best"]
        assert (best["export_id"], best["request_id"]) == (target.export_id, target.request_id)
        assert best["organisation"] == CIVIL and best["client"]
        assert best["posterior"] > 0.99
        assert answer["runner_up"]["export_id"] != target.export_id
        assert answer["log10_likelihood_ratio_to_runner_up"] > 2


def test_a_reshuffled_subset_with_columns_cut_is_still_traced(vault: Vault, tmp_path: Path) -> None:
    rng = random.Random(7)
    target = next(m for m in vault.exports[45:] if m.format == "csv" and m.organisation == HEALTH)
    _, rows = rows_of(target)
    picked = rng.sample(rows, 50)  # shuffled, no header
    # Columns cut with a line tool (the resident id among them), the rest kept as written:
    # a leaker keeps the columns that say something, so seven that hold values.
    parsed = [csv_cells(line) for line in picked]
    filled = [
        i
        for i in range(len(parsed[0]))
        if all(cells[i][0] for cells in parsed) and not parsed[0][i][0].startswith("ps_")
    ]
    keep = filled[:7]
    assert len(keep) >= 4
    cut = []
    for cells in parsed:
        cut.append(",".join(f'"{t}"' if q else t for i, (t, q) in enumerate(cells) if i in keep))
    answer = traced(trace(vault, tmp_path, "\n".join(cut) + "\n"))
    assert answer["best"]["export_id"] == target.export_id
    assert answer["best"]["posterior"] > 0.99


def test_english_output_names_export_request_and_organisation(vault: Vault, tmp_path: Path) -> None:
    target = vault.exports[60]
    _, rows = rows_of(target)
    path = tmp_path / "leak.ndjson"
    path.write_text("".join(rows[:20]))
    result = run_cli(vault, ["--lang", "en", "trace", str(path)])
    assert result.exit_code == 0, result.output
    assert f"export: {target.export_id}" in result.stdout
    assert f"request: {target.request_id}" in result.stdout
    assert f"organisation: {target.organisation}" in result.stdout
    assert "confidence (posterior)" in result.stdout and "runner-up:" in result.stdout


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "not UTF-8"),
        ('{"resident_id": "r_0123456789abcdef"}\nnot json at all\n', "line 2 is not JSON"),
        ("\n\n", "no rows"),
    ],
)
def test_a_bad_file_is_one_line_and_exit_2(
    vault: Vault, tmp_path: Path, body: bytes | str, message: str
) -> None:
    result = trace(vault, tmp_path, body, "--lang", "en")
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(said(result)) == 1
    missing = run_cli(vault, ["trace", str(tmp_path / "absent.csv")])
    assert missing.exit_code == 2 and len(said(missing)) == 1
    assert "无法读取" in missing.stderr  # Chinese by default


# -- the export record -------------------------------------------------------------------------


def test_each_export_is_recorded_and_its_summary_is_the_owners_only(vault: Vault) -> None:
    server = vault.server
    with server.runtime.vault.sessions() as session:
        records = {r.id: r for r in session.scalars(select(ExportRecord))}
    made = vault.exports[0]
    record = records[made.export_id]
    _, rows = rows_of(made)
    assert (record.request_id, record.organisation, record.state) == (
        made.request_id,
        CIVIL,
        "complete",
    )
    assert record.rows == len(rows) and record.decoys and record.purpose == "subsidy-review"
    # No secret and no personal value in the record: only ids, counts and keyed digests.
    assert "secret" not in json.dumps(record.filters) and all(
        len(m) == 16 for marks in record.decoy_marks.values() for m in marks
    )
    url = f"{server.url}/v1/exports/{made.export_id}"
    own = httpx.get(url, headers={"Authorization": f"Bearer {server.client_token(CIVIL)}"})
    assert own.json() == {
        "export_id": made.export_id,
        "state": "complete",
        "rows": len(rows),
        "left_out": 0,
        "purpose": "subsidy-review",
        "format": "ndjson",
    }
    other = httpx.get(url, headers={"Authorization": f"Bearer {server.client_token(HEALTH)}"})
    assert other.status_code == 404
    assert other.headers["content-type"].startswith("application/problem+json")


def test_every_decoy_row_was_audited_before_it_was_sent_and_marked_decoy(vault: Vault) -> None:
    server = vault.server
    made = vault.exports[3]
    with server.runtime.vault.sessions() as session:
        record = session.get(ExportRecord, made.export_id)
        assert record is not None
        entries = list(
            session.scalars(select(AuditEntry).where(AuditEntry.decision_id == record.decision_id))
        )
    _, rows = rows_of(made)
    assert len(entries) == len(rows)
    decoy_entries = [e for e in entries if e.kind == "decoy"]
    assert sorted(e.resident_id or "" for e in decoy_entries) == sorted(record.decoys)
    assert all(e.details.get("decoy") is True for e in decoy_entries)
    assert {e.kind for e in entries} == {"access", "decoy"}


# -- decoys appear nowhere else ---------------------------------------------------------------


def decoys(server: DemoServer) -> list[str]:
    with server.runtime.vault.sessions() as session:
        return list(session.scalars(select(Resident.id).where(Resident.is_decoy.is_(True))))


def real(server: DemoServer) -> list[str]:
    with server.runtime.vault.sessions() as session:
        return list(
            session.scalars(
                select(Resident.id).where(Resident.is_decoy.is_(False), Resident.status == "active")
            )
        )


def test_decoys_never_appear_in_lists_reads_searches_or_statistics(vault: Vault) -> None:
    server = vault.server
    planted = decoys(server)
    assert len(planted) >= 12
    token = server.client_token(CIVIL)
    headers = {"Authorization": f"Bearer {token}", "Purpose": "subsidy-review"}
    listed = httpx.get(f"{server.url}/v1/residents", params={"limit": 500}, headers=headers)
    names = {i["resident_id"] for i in listed.json()["items"]}
    assert len(names) == len(real(server))
    assert not names & {server.pseudonym(CIVIL, d) for d in planted}
    # Each decoy was in some export, under the organisation's pseudonym; reading it is 404.
    for decoy in planted[:5]:
        read = httpx.get(
            f"{server.url}/v1/residents/{server.pseudonym(CIVIL, decoy)}", headers=headers
        )
        assert read.status_code == 404
        with server.runtime.vault.sessions() as session:
            phone = server.runtime.vault.store.read(session, decoy, ["phone"]).get("phone")
        if phone:
            found = httpx.post(
                f"{server.url}/v1/residents/search", json={"phone": phone}, headers=headers
            )
            assert server.pseudonym(CIVIL, decoy) not in found.text


def test_decoys_are_not_counted_in_statistics(vault: Vault) -> None:
    server = vault.server
    assert decoys(server)
    headers = {
        "Authorization": f"Bearer {server.client_token(CIVIL)}",
        "Purpose": "community-statistics",
    }
    stats = httpx.get(
        f"{server.url}/v1/stats/residents", params={"by": "community"}, headers=headers
    )
    assert stats.status_code == 200, stats.text
    assert str(len(real(server))) in json.dumps(stats.json()["totals"])


def test_decoys_never_appear_in_reports_of_real_accesses_or_residents_views(
    vault: Vault,
) -> None:
    server = vault.server
    planted = set(decoys(server))
    with server.runtime.vault.sessions() as session:
        per_day = accesses_per_day(session, EntryFilter())
        real_accesses = session.scalars(select(AuditEntry).where(AuditEntry.kind == "access")).all()
        sensitive = ["low_income_status", "health_conditions"]
        reported = [
            *sensitive_reads(session, EntryFilter(), sensitive),
            *out_of_hours(session, EntryFilter()),
        ]
        decoy_entries = session.scalars(select(AuditEntry).where(AuditEntry.kind == "decoy")).all()
    assert decoy_entries and {e.resident_id for e in decoy_entries} <= planted
    assert sum(row["count"] for row in per_day) == len(real_accesses)
    assert not {e.resident_id for e in reported} & planted
    auditor = server.user("auditor")
    audit_token = server.login(auditor["username"], auditor["password"], "audit:read")
    bearer = {"Authorization": f"Bearer {audit_token['access_token']}"}
    report = httpx.get(f"{server.url}/v1/audit/reports/accesses-per-day", headers=bearer)
    assert report.status_code == 200
    assert sum(row["count"] for row in report.json()["items"]) <= len(real_accesses) + 5
    resident = real(server)[0]
    me = {"Authorization": f"Bearer {server.resident_token(resident)}"}
    mine = httpx.get(f"{server.url}/v1/me/accesses", params={"limit": 200}, headers=me)
    assert mine.status_code == 200
    items = mine.json()["items"]
    assert items and all(i.get("kind") != "decoy" for i in items)
    assert not {i.get("resident_id") for i in items} & planted


# -- the channels, as properties --------------------------------------------------------------

keys = st.binary(min_size=32, max_size=32).map(ExportKey)
cell = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


@settings(max_examples=200, deadline=None)
@given(key=keys, cells=st.lists(cell, min_size=1, max_size=10))
def test_csv_quoting_reads_back_the_same_and_shows_the_keyed_bits(
    key: ExportKey, cells: list[str]
) -> None:
    line = csv_line(cells, key)
    assert next(csv.reader(io.StringIO(line))) == cells
    assert [t for t, _ in csv_cells(line)] == cells or any("\n" in c or "\r" in c for c in cells)
    for text, quoted in csv_observations(csv_cells(line)).items():
        assert quoted == key.bit("csv", text)


values = st.one_of(
    st.text(max_size=8), st.integers(), st.booleans(), st.lists(st.text(max_size=4), max_size=3)
)


@settings(max_examples=200, deadline=None)
@given(
    key=keys,
    fields=st.dictionaries(st.from_regex(r"[a-z_]{1,10}", fullmatch=True), values, max_size=6),
)
def test_ndjson_reads_back_the_same_and_shows_the_keyed_choices(
    key: ExportKey, fields: dict[str, Any]
) -> None:
    record = {
        "resident_id": "ps_abc",
        "fields": fields,
        "treatments": dict.fromkeys(fields, "clear"),
    }
    line = ndjson_line(record, key)
    assert json.loads(line) == record and line.endswith("\n") and "\n" not in line[:-1]
    for (channel, text), value in ndjson_observations(line, json.loads(line)).items():
        assert value == expected(key, channel, text)


@settings(max_examples=100, deadline=None)
@given(
    key=keys,
    ids=st.lists(st.text(min_size=1, max_size=10), min_size=2, max_size=40, unique=True),
    data=st.data(),
)
def test_any_subset_of_an_export_keeps_its_keyed_order(
    key: ExportKey, ids: list[str], data: st.DataObject
) -> None:
    exported = sorted(ids, key=key.order_key)
    subset = data.draw(st.lists(st.sampled_from(exported), unique=True, min_size=2))
    in_file = [i for i in exported if i in subset]
    keys_ = [key.order_key(i) for i in in_file]
    assert keys_ == sorted(keys_)


def test_a_consent_based_export_gets_decoys_in_proportion_shown_like_consenting_rows(
    vault: Vault,
) -> None:
    """Property companies may not export under the shipped policy; with a policy that lets
    them, decoys scale with the consenting residents and show what a consent covers."""
    server = vault.server
    company, purpose = "org_anju_property", "property-notice"
    with server.runtime.vault.sessions() as session:
        xingfu = list(
            session.scalars(
                select(Resident.id)
                .join(Household)
                .join(Room)
                .join(Building)
                .where(Building.community_id == "cm_xingfu", Resident.is_decoy.is_(False))
                .order_by(Resident.id)
                .limit(2)
            )
        )
    for resident in xingfu:  # two residents consent to the company's notices
        granted = httpx.post(
            f"{server.url}/v1/me/consents",
            json={
                "recipient": company,
                "purpose": purpose,
                "separate": True,
                "fields": ["phone", "address"],
            },
            headers={"Authorization": f"Bearer {server.resident_token(resident)}"},
        )
        assert granted.status_code == 201, granted.text
    data = copy.deepcopy(load_bundle().data)
    data["purposes"][purpose]["actions"] = [*data["purposes"][purpose]["actions"], "export"]
    engine = EmbeddedEngine(load_bundle(data=data))
    try:
        gate = Gate(server.runtime, engine)
        with server.runtime.vault.sessions() as session:
            subject = dataclasses.replace(organisation_subject(session, company), client="cl_t")
        access = Access(subject=subject, purpose=purpose, request_id="req-consent-export")
        opened = open_export(gate, access, format="ndjson")
        rows = [json.loads(line) for line in opened.lines]
    finally:
        engine.close()
    with server.runtime.vault.sessions() as session:
        record = session.get(ExportRecord, opened.export_id)
    assert record is not None and record.rows == len(rows)
    planted = {server.pseudonym(company, d) for d in record.decoys}
    real_rows = [r for r in rows if r["resident_id"] not in planted]
    assert real_rows and len(planted) == 1  # the minimum, for a handful of consents
    shown = {frozenset(n for n, t in r["treatments"].items() if t != "denied") for r in real_rows}
    for row in rows:
        if row["resident_id"] in planted:
            assert frozenset(n for n, t in row["treatments"].items() if t != "denied") in shown


def test_a_decoy_row_is_recognised_by_its_content_with_the_id_cut_and_the_file_rewritten(
    vault: Vault,
) -> None:
    server = vault.server
    made = next(m for m in vault.exports if m.format == "csv" and m.organisation == CIVIL)
    with server.runtime.vault.sessions() as session:
        records = list(session.scalars(select(ExportRecord)))
    record = next(r for r in records if r.id == made.export_id)
    decoy = record.decoys[0]
    _, rows = rows_of(made)
    parsed = list(csv.reader(io.StringIO("".join(rows))))
    planted = server.pseudonym(CIVIL, decoy)
    leaked = [r for r in parsed if r[0] != planted][:8] + [r for r in parsed if r[0] == planted]
    buffer = io.StringIO()
    csv.writer(buffer).writerows(row[1:] for row in leaked)  # no id column, no header
    master = fingerprint_master(server.runtime.vault.keyring)
    scored = score_exports(
        read_leak(buffer.getvalue().encode()),
        records,
        master,
        mark_key(master),
        Pseudonyms(server.runtime.vault.keyring),
    )
    with_decoy = {r.id for r in records if decoy in r.decoys}
    assert made.export_id in with_decoy and len(with_decoy) < len(records)
    evidence = {s.record.id: s.evidence["decoys"] for s in scored}
    assert evidence[made.export_id] > -1  # the export the row came from recognises it
    # An export without this decoy cannot; one that planted the same decoy carries its own
    # marks in the row's content, so it may or may not match this copy: no claim either way.
    assert all(evidence[r.id] <= -1 for r in records if r.id not in with_decoy)


@settings(max_examples=50, deadline=None)
@given(
    master=st.binary(min_size=32, max_size=32),
    names=st.lists(
        st.from_regex(r"[a-z]{3,8}", fullmatch=True), min_size=4, max_size=22, unique=True
    ),
)
def test_only_the_right_export_gains_from_a_rewritten_files_column_order(
    master: bytes, names: list[str]
) -> None:
    """What survives a spreadsheet: the header. Its order is evidence for the export that
    chose it, and none for any other (their orders are as good as random)."""
    records = [
        ExportRecord(
            id=f"exp_{i:032x}",
            recipient="x",
            pseudonymous=False,
            rows=10,
            decoys=[],
            decoy_marks={},
        )
        for i in range(2)
    ]
    header = column_order(ExportKey.derive(master, records[0].id), names)
    body = ",".join(["resident_id", *header]) + "\r\n" + ",".join(["", *names]) + "\r\n"
    scored = score_exports(
        read_leak(body.encode()), records, master, mark_key(master), Pseudonyms(cast(Keyring, None))
    )
    evidence = {s.record.id: s.evidence["columns"] for s in scored}
    assert evidence[records[0].id] > 2
    if header != column_order(ExportKey.derive(master, records[1].id), names):
        assert evidence[records[1].id] < 0


def _planned_rows(server: DemoServer, export_id: str) -> int:
    with server.runtime.vault.sessions() as session:
        found = session.scalars(
            select(ExportPlanRow.resident_id).where(ExportPlanRow.export_id == export_id)
        )
        return len(list(found))


def test_an_exports_plan_is_in_the_database_while_it_streams_and_gone_after(
    vault: Vault,
) -> None:
    """The keyed order is planned into the database, not held in memory: the rows come back
    in the same order a batch of 7 at a time as 500 at a time, the plan is deleted when the
    last batch is out, and an unfinished export's plan is swept a day on."""
    server = vault.server
    stale = "exp_never_finished"
    with server.runtime.transaction() as session:
        session.add(ExportPlan(export_id=stale, planned_at=utcnow() - PLAN_KEPT - timedelta(1)))
        session.add(
            ExportPlanRow(export_id=stale, sort_key=b"\0" * 8, resident_id="r_x", decoy=False)
        )
    engine = EmbeddedEngine(load_bundle())
    try:
        gate = Gate(server.runtime, follow_district(engine, server.runtime.vault.sessions))
        with server.runtime.vault.sessions() as session:
            subject = dataclasses.replace(organisation_subject(session, CIVIL), client="cl_t")
        access = Access(subject, PURPOSES[CIVIL], "req-plan", justification="年度复核")
        key = ExportKey.derive(fingerprint_master(server.runtime.vault.keyring), "exp_plan")
        orders = []
        for export_id, batch_size in (("exp_plan_by_7", 7), ("exp_plan_by_500", 500)):
            fingerprint = Fingerprint(export_id, key)
            _, batches, summary = gate.export(
                access, batch_size=batch_size, fingerprint=fingerprint
            )
            first = next(batches)
            planned = _planned_rows(server, export_id)
            assert _planned_rows(server, stale) == 0  # swept when this plan was made
            rows = [view.resident_id for view in first]
            rows += [view.resident_id for batch in batches for view in batch]
            assert planned == len(rows) == summary["rows"] and fingerprint.decoys
            assert _planned_rows(server, export_id) == 0
            orders.append(rows)
    finally:
        engine.close()
    assert orders[0] == orders[1]
    assert orders[0] == sorted(orders[0], key=key.order_key)
    with server.runtime.vault.sessions() as session:
        assert session.get(ExportPlan, "exp_plan_by_7") is None
