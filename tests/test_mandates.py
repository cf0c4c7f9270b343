"""Mandates and the purpose registry in the database, in force on the next decision on
every engine, and the whole district applied from one file (issue 19)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from access.runtime import Runtime, open_runtime
from access.subjects import organisation_subject
from api.cli.main import app
from api.settings import Settings
from audit.models import AuditEntry
from policies import CachedEngine, EmbeddedEngine, PolicyEngine
from policies.bundle import find_opa
from policies.district import DistrictEngine, follow_district
from policies.inputs import decision_input
from policies.opa_server import OpaServerEngine, local_opa_server
from vault.mandates import Mandate, catalogue_categories, grant_mandate, revoke_mandate
from vault.policy_data import data_revision

DISTRICT_FILE = Path(__file__).resolve().parents[1] / "docs" / "district.yaml"


def _env(home: Path, database_url: str) -> dict[str, str]:
    return {"VAULT_HOME": str(home), "VAULT_DATABASE_URL": database_url, "VAULT_LANG": "en"}


def _ok(home: Path, database_url: str, *args: str) -> str:
    result = CliRunner().invoke(
        app, ["--log-json", *args], env=_env(home, database_url), catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result.stdout


def _refused(home: Path, database_url: str, *args: str) -> str:
    """A refusal as the operator meets it: a real process, one line on stderr."""
    done = subprocess.run(
        [sys.executable, "-c", "from api.cli.main import main; main()", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **_env(home, database_url)},
        timeout=120,
        check=False,
    )
    assert done.returncode != 0, done.stdout
    lines = [line for line in done.stderr.splitlines() if not line.startswith("{")]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def _count(database_url: str, model: Any) -> int:
    engine = create_engine(database_url)
    try:
        with Session(engine) as session:
            return int(session.scalar(select(func.count()).select_from(model)) or 0)
    finally:
        engine.dispose()


def _entries(database_url: str, action: str) -> list[AuditEntry]:
    engine = create_engine(database_url)
    try:
        with Session(engine) as session:
            return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))
    finally:
        engine.dispose()


@pytest.fixture
def district_home(tmp_path: Path, database_url: str) -> Path:
    """An empty vault with one street, community, building and a department serving it."""
    home = tmp_path / "home"
    _ok(home, database_url, "init")
    for args in (
        ["street", "st_a", "--name", "甲街道"],
        ["community", "cm_a", "--name", "甲社区", "--parent", "st_a"],
        ["grid", "gd_a", "--name", "甲网格", "--parent", "cm_a"],
        ["building", "bd_a", "--name", "甲楼", "--parent", "gd_a"],
    ):
        _ok(home, database_url, "places", "add", *args)
    _ok(
        home,
        database_url,
        "orgs",
        "add",
        "org_ca",
        "--kind",
        "department",
        "--name",
        "民政",
        "--place",
        "cm_a",
    )
    _ok(home, database_url, "orgs", "add", "org_pm", "--kind", "property_company", "--name", "物业")
    return home


def test_mandates_are_granted_listed_and_revoked_from_commands(
    district_home: Path, database_url: str
) -> None:
    home = district_home
    granted = _ok(
        home,
        database_url,
        "mandates",
        "grant",
        "org_ca",
        "--purpose",
        "subsidy-review",
        "--action",
        "read,list",
        "--fields",
        "name,low_income_status",
        "--until",
        "2099-12-31",
        "--actor",
        "ops:li",
        "--json",
    )
    record = json.loads(granted.splitlines()[-1])
    assert record["actions"] == ["read", "list"]
    assert record["fields"] == ["name", "low_income_status"]
    assert record["valid_until"] == "2100-01-01T00:00:00+08:00"
    listed = _ok(home, database_url, "mandates", "list", "--org", "org_ca", "--json")
    assert [json.loads(line)["purpose"] for line in listed.splitlines()] == ["subsidy-review"]

    # Granting again replaces the mandate in force; the old one stays, revoked, as history.
    _ok(
        home,
        database_url,
        "mandates",
        "grant",
        "org_ca",
        "--purpose",
        "subsidy-review",
        "--action",
        "read",
    )
    _ok(home, database_url, "mandates", "revoke", "org_ca", "--purpose", "subsidy-review")
    assert _ok(home, database_url, "mandates", "list", "--json").strip() == ""
    history = _ok(home, database_url, "mandates", "list", "--history", "--json").splitlines()
    assert len(history) == 2 and all(json.loads(line)["revoked_at"] for line in history)
    granters = [entry.user for entry in _entries(database_url, "mandate.granted")]
    assert len(granters) == 2 and granters[0] == "ops:li"
    assert len(_entries(database_url, "mandate.revoked")) == 1


BAD_GRANTS = [
    (["org_none", "--purpose", "subsidy-review", "--action", "read"], "no organisation org_none"),
    (["org_ca", "--purpose", "no-such-purpose", "--action", "read"], "no purpose no-such-purpose"),
    (["org_pm", "--purpose", "subsidy-review", "--action", "read"], "is not for"),
    (["org_ca", "--purpose", "subsidy-review", "--action", "delete"], "cannot be “delete”"),
    (["org_ca", "--purpose", "subsidy-review", "--action", "write"], "does not permit write"),
    (
        ["org_ca", "--purpose", "subsidy-review", "--action", "read", "--fields", "religion"],
        "does not show the field religion",
    ),
    (
        ["org_ca", "--purpose", "subsidy-review", "--action", "read", "--fields", "shoe_size"],
        "no field shoe_size",
    ),
    (
        ["org_ca", "--purpose", "subsidy-review", "--action", "read", "--basis", "whim"],
        "basis cannot be “whim”",
    ),
    (
        ["org_ca", "--purpose", "subsidy-review", "--action", "read", "--until", "2001-01-01"],
        "has passed",
    ),
    (
        ["org_ca", "--purpose", "subsidy-review", "--action", "read", "--until", "soon"],
        "is not valid",
    ),
]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_refused_grant_says_why_in_one_line_and_writes_nothing(
    district_home: Path, database_url: str
) -> None:
    before = _count(database_url, AuditEntry), _count(database_url, Mandate)
    for args, says in BAD_GRANTS:
        line = _refused(district_home, database_url, "mandates", "grant", *args)
        assert says in line, (args, line)
    line = _refused(
        district_home, database_url, "mandates", "revoke", "org_ca", "--purpose", "subsidy-review"
    )
    assert "holds no mandate in force" in line
    assert (_count(database_url, AuditEntry), _count(database_url, Mandate)) == before


# -- the engines follow the database ---------------------------------------------------------


@pytest.fixture
def runtime(district_home: Path, database_url: str) -> Iterator[Runtime]:
    opened = open_runtime(Settings(home=district_home, database_url=database_url))
    yield opened
    opened.close()


def _ask(engine: PolicyEngine, runtime: Runtime, action: str = "read") -> Any:
    with runtime.vault.sessions() as session:
        subject = organisation_subject(session, "org_ca")
    return engine.evaluate(
        decision_input(subject.policy_input(), action=action, purpose="subsidy-review")
    )


def _grant(runtime: Runtime, actions: list[str], fields: list[str] | None = None) -> None:
    with runtime.transaction() as session:
        grant_mandate(
            session,
            "org_ca",
            "subsidy-review",
            actions,
            fields=fields,
            field_categories=catalogue_categories(runtime.vault.store.catalogue),
            actor="test",
        )


def _revoke(runtime: Runtime) -> None:
    with runtime.transaction() as session:
        revoke_mandate(session, "org_ca", "subsidy-review", actor="test")


def _follows(engine: PolicyEngine, runtime: Runtime) -> None:
    """Grant, narrow and revoke: each in force on the very next decision."""
    before = _ask(engine, runtime)
    assert before.allow is False and before.reason.code == "no-mandate"
    _grant(runtime, ["read", "list"])
    allowed = _ask(engine, runtime)
    assert allowed.allow is True
    assert allowed.fields["low_income_status"] == "clear"
    with runtime.vault.sessions() as session:
        revision = data_revision(session)
    assert allowed.revision.endswith(f".d{revision}")
    assert _ask(engine, runtime, "export").reason.code == "action-not-mandated"
    _grant(runtime, ["read"], fields=["name"])
    narrowed = _ask(engine, runtime)
    assert narrowed.fields["name"] == "clear"
    assert narrowed.fields["low_income_status"] == "denied"
    assert _ask(engine, runtime, "list").reason.code == "action-not-mandated"
    _revoke(runtime)
    revoked = _ask(engine, runtime)
    assert revoked.allow is False and revoked.reason.code == "no-mandate"


def test_a_mandate_change_is_in_force_on_the_next_decision_embedded(runtime: Runtime) -> None:
    engine = follow_district(CachedEngine(EmbeddedEngine()), runtime.vault.sessions)
    assert isinstance(engine, DistrictEngine)
    _follows(engine, runtime)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_mandate_change_is_in_force_on_the_next_decision_on_the_opa_server(
    runtime: Runtime, tmp_path: Path
) -> None:
    opa = find_opa()
    if opa is None:
        if os.environ.get("CI") == "true":
            pytest.fail("OPA binary missing under CI")
        pytest.skip("no opa binary")
    from policies import build_bundle, load_bundle

    bundle_file = build_bundle(opa, load_bundle(), tmp_path / "bundle.tar.gz")
    with local_opa_server(opa, bundle=bundle_file) as url:
        server = OpaServerEngine(url, expected_revision=load_bundle().revision)
        engine = follow_district(CachedEngine(server), runtime.vault.sessions)
        _follows(engine, runtime)


# -- the district from one file --------------------------------------------------------------


@pytest.fixture
def empty_home(tmp_path: Path, database_url: str) -> Path:
    home = tmp_path / "empty"
    _ok(home, database_url, "init")
    return home


def test_the_example_district_file_applies_idempotently_and_exports_the_same(
    empty_home: Path, database_url: str, tmp_path: Path
) -> None:
    dry = _ok(
        empty_home, database_url, "district", "apply", str(DISTRICT_FILE), "--dry-run", "--json"
    )
    planned = [json.loads(line) for line in dry.splitlines()]
    assert {(c["action"], c["kind"]) for c in planned} >= {
        ("add", "street"),
        ("add", "community"),
        ("add", "grid"),
        ("add", "building"),
        ("add", "organisation"),
        ("add", "purpose"),
        ("add", "mandate"),
    }
    assert _count(database_url, Mandate) == 0, "a dry run writes nothing"
    applied = _ok(empty_home, database_url, "district", "apply", str(DISTRICT_FILE), "--json")
    assert [json.loads(line) for line in applied.splitlines()] == planned
    assert len(_entries(database_url, "district.applied")) == 1
    again = _ok(empty_home, database_url, "district", "apply", str(DISTRICT_FILE), "--json")
    assert again.strip() == "", "applying the same file again changes nothing"

    exported = tmp_path / "exported.yaml"
    _ok(empty_home, database_url, "district", "export", "--output", str(exported))
    assert _ok(empty_home, database_url, "district", "apply", str(exported), "--json").strip() == ""

    # Leave a building and a mandate out, rename a grid: the diff says exactly that.
    edited = DISTRICT_FILE.read_text(encoding="utf-8")
    edited = edited.replace("滨江第二网格", "滨江二网格").replace(
        "              - {id: bd_willow_01, name: 1幢}\n", ""
    )
    edited = edited[: edited.index("  - org: org_riverside_civil\n    purpose: flood-relocation")]
    (tmp_path / "edited.yaml").write_text(edited, encoding="utf-8")
    diff = _ok(
        empty_home, database_url, "district", "apply", str(tmp_path / "edited.yaml"), "--json"
    )
    changes = {(c["action"], c["kind"], c["id"]) for c in map(json.loads, diff.splitlines())}
    assert changes == {
        ("change", "grid", "gd_riverside_2"),
        ("retire", "building", "bd_willow_01"),
        ("retire", "mandate", "org_riverside_civil:flood-relocation"),
    }


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_refused_district_file_writes_nothing(
    empty_home: Path, database_url: str, tmp_path: Path
) -> None:
    before = _count(database_url, AuditEntry)
    bad = DISTRICT_FILE.read_text(encoding="utf-8").replace(
        "purpose: flood-relocation\n    actions: [read, list]",
        "purpose: flood-relocation\n    actions: [read, export]",
    )
    (tmp_path / "bad.yaml").write_text(bad, encoding="utf-8")
    line = _refused(empty_home, database_url, "district", "apply", str(tmp_path / "bad.yaml"))
    assert "does not permit export" in line
    (tmp_path / "broken.yaml").write_text("streets: [\n", encoding="utf-8")
    assert "not valid YAML" in _refused(
        empty_home, database_url, "district", "apply", str(tmp_path / "broken.yaml")
    )
    assert _count(database_url, AuditEntry) == before
    assert "st_riverside" not in _ok(empty_home, database_url, "places", "list", "--json")


def test_a_street_office_is_granted_a_purpose_of_the_districts_own(
    district_home: Path, database_url: str, runtime: Runtime
) -> None:
    """A kind with no purpose by default gets exactly what a registered purpose for it and
    a mandate give, and nothing before."""
    home = district_home
    office = "orgs add org_so --kind street_office --name 甲街道办 --place cm_a"
    _ok(home, database_url, *office.split())
    purpose = (
        "purposes add flood-relocation --name 防汛转移 --name-en Flood-relocation "
        "--basis statutory-duty --law 《防洪法》 --law-en Flood-Control-Law "
        "--recipient street_office --action list --field name=clear --field phone=clear"
    )
    _ok(home, database_url, *purpose.split())
    engine = follow_district(CachedEngine(EmbeddedEngine()), runtime.vault.sessions)

    def ask() -> Any:
        with runtime.vault.sessions() as session:
            subject = organisation_subject(session, "org_so")
        return engine.evaluate(
            decision_input(subject.policy_input(), action="list", purpose="flood-relocation")
        )

    assert ask().reason.code == "no-mandate"
    _ok(
        home,
        database_url,
        *["mandates", "grant", "org_so", "--purpose", "flood-relocation", "--action", "list"],
    )
    decision = ask()
    assert decision.allow
    assert {n for n, t in decision.fields.items() if t != "denied"} == {"name", "phone"}
    assert decision.rows.communities == ("cm_a",)
