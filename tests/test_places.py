"""`resident-vault places` and `orgs`: a district's places and organisations from commands
alone, each change audited, each refusal one line with nothing written (issue 19)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from access.subjects import organisation_subject
from api.cli.main import app
from audit.models import AuditEntry
from vault.models import Building


def _run(home: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VAULT_HOME": str(home), "VAULT_DATABASE_URL": database_url}
    env["VAULT_LANG"] = "en"
    return subprocess.run(
        [sys.executable, "-c", "from api.cli.main import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def _ok(home: Path, database_url: str, *args: str) -> str:
    """A command that succeeds, run in this process (a process start costs seconds); the
    refusals run as real processes, since their one line is what the operator sees."""
    variables = {"VAULT_HOME": str(home), "VAULT_DATABASE_URL": database_url, "VAULT_LANG": "en"}
    result = CliRunner().invoke(app, ["--log-json", *args], env=variables, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def _places(home: Path, database_url: str, *extra: str) -> dict[str, dict[str, Any]]:
    listed = _ok(home, database_url, "places", "list", "--json", *extra)
    rows = [json.loads(line) for line in listed.splitlines() if line.startswith('{"kind"')]
    return {row["id"]: row for row in rows}


def _entries(database_url: str, action: str) -> list[AuditEntry]:
    engine = create_engine(database_url)
    try:
        with Session(engine) as session:
            return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))
    finally:
        engine.dispose()


@pytest.fixture
def empty_home(tmp_path: Path, database_url: str) -> Path:
    home = tmp_path / "home"
    _ok(home, database_url, "init")
    return home


def test_a_district_is_built_from_commands_and_every_change_is_audited(
    empty_home: Path, database_url: str
) -> None:
    steps = [
        ("street", "st_east", "东城街道", None),
        ("street", "st_west", "西城街道", None),
        ("community", "cm_river", "滨江社区", "st_east"),
        ("community", "cm_hill", "山景社区", "st_west"),
        ("grid", "gd_river_1", "滨江一网格", "cm_river"),
        ("building", "bd_river_1", "滨江1号楼", "gd_river_1"),
    ]
    for kind, place_id, name, parent in steps:
        args = ["places", "add", kind, place_id, "--name", name, "--actor", "ops:li"]
        _ok(empty_home, database_url, *args, *(["--parent", parent] if parent else []))
    places = _places(empty_home, database_url)
    assert {p: (r["kind"], r["parent"]) for p, r in places.items()} == {
        place_id: (kind, parent) for kind, place_id, _, parent in steps
    }
    assert places["bd_river_1"]["name"] == "滨江1号楼"
    added = _entries(database_url, "place.added")
    assert [e.details["id"] for e in added] == [place_id for _, place_id, _, _ in steps]
    assert {e.user for e in added} == {"ops:li"}

    # A grid moved to another community takes its buildings with it.
    moved = _run(
        empty_home, database_url, "places", "move", "grid", "gd_river_1", "--parent", "cm_hill"
    )
    assert moved.returncode == 0, moved.stderr
    engine = create_engine(database_url)
    with Session(engine) as session:
        assert session.get(Building, "bd_river_1").community_id == "cm_hill"  # type: ignore[union-attr]
    engine.dispose()
    assert _places(empty_home, database_url)["gd_river_1"]["parent"] == "cm_hill"

    # An empty building retires; its grid then holds nothing in use and retires too.
    for kind, place_id in (("building", "bd_river_1"), ("grid", "gd_river_1")):
        _ok(empty_home, database_url, "places", "retire", kind, place_id)
    assert "bd_river_1" not in _places(empty_home, database_url)
    assert _places(empty_home, database_url, "--retired")["bd_river_1"]["retired"] is True
    assert len(_entries(database_url, "place.retired")) == 2


BAD_CHANGES = [
    (["add", "community", "cm_x", "--name", "X"], "needs --parent"),
    (["add", "community", "cm_x", "--name", "X", "--parent", "st_none"], "no such street"),
    (["add", "grid", "gd_x", "--name", "X", "--parent", "st_east"], "no such community"),
    (["add", "street", "st_east", "--name", "again"], "already in use"),
    (["add", "street", "St East", "--name", "X"], "invalid id"),
    (["add", "street", "st_x", "--name", " "], "a name is required"),
    (["add", "region", "rg_x", "--name", "X"], "unknown kind of place"),
    (["add", "street", "st_x", "--name", "X", "--parent", "st_east"], "has no parent"),
    (["retire", "street", "st_east"], "still holds 1 places in use"),
]


def _changes(database_url: str) -> int:
    return sum(len(_entries(database_url, a)) for a in ("place.added", "place.retired"))


def test_a_bad_change_is_one_line_and_writes_nothing(empty_home: Path, database_url: str) -> None:
    _ok(empty_home, database_url, "places", "add", "street", "st_east", "--name", "东城街道")
    _ok(
        empty_home,
        database_url,
        "places",
        "add",
        "community",
        "cm_river",
        "--name",
        "滨江社区",
        "--parent",
        "st_east",
    )
    before, entries = _places(empty_home, database_url, "--retired"), _changes(database_url)
    for args, says in BAD_CHANGES:
        refused = _run(empty_home, database_url, "places", *args)
        assert refused.returncode == 1, args
        lines = [line for line in refused.stderr.splitlines() if not line.startswith("{")]
        assert len(lines) == 1 and lines[0].startswith("resident-vault: "), refused.stderr
        assert says in lines[0], (args, lines[0])
    assert _places(empty_home, database_url, "--retired") == before
    assert _changes(database_url) == entries


def test_a_place_people_live_in_is_not_retired(tmp_path: Path, database_url: str) -> None:
    home = tmp_path / "home"
    _ok(home, database_url, "init", "--demo", "--residents", "30")
    places = _places(home, database_url)
    inhabited = next(p for p, r in places.items() if r["kind"] == "building" and r["residents"])
    refused = _run(home, database_url, "places", "retire", "building", inhabited)
    assert refused.returncode == 1
    assert f"still has {places[inhabited]['residents']} residents" in refused.stderr
    assert _places(home, database_url)[inhabited]["retired"] is False
    total = sum(r["residents"] for r in places.values() if r["kind"] == "building")
    streets = sum(r["residents"] for r in places.values() if r["kind"] == "street")
    assert total == streets == 30


def test_organisations_are_added_listed_and_retired_from_commands(
    tmp_path: Path, database_url: str
) -> None:
    home = tmp_path / "home"
    _ok(home, database_url, "init", "--demo", "--residents", "20")
    add = ["orgs", "add", "org_ca_east", "--kind", "department", "--name", "东城民政科"]
    add += ["--name-en", "East civil affairs", "--place", "cm_xingfu", "--place", "cm_hexie"]
    _ok(home, database_url, *add, "--actor", "ops:li")
    listed = _ok(home, database_url, "orgs", "list", "--json")
    rows = {r["id"]: r for r in map(json.loads, listed.splitlines()) if r.get("id")}
    assert rows["org_ca_east"]["communities"] == ["cm_hexie", "cm_xingfu"]
    assert rows["org_ca_east"]["name"] == {"zh": "东城民政科", "en": "East civil affairs"}
    assert [e.user for e in _entries(database_url, "organisation.added")] == ["ops:li"]
    for args, says in (
        (["add", "org_x", "--kind", "guild", "--name", "X"], "unknown kind"),
        (["add", "org_x", "--kind", "department", "--name", "X", "--place", "cm_no"], "no such"),
        (["add", "org_ca_east", "--kind", "department", "--name", "X"], "already in use"),
        (["retire", "org_nobody"], "no such organisation"),
    ):
        refused = _run(home, database_url, "orgs", *args)
        assert refused.returncode == 1 and says in refused.stderr, refused.stderr
    assert len(_entries(database_url, "organisation.added")) == 1

    # A retired organisation's systems are asked about as nobody: deny by default.
    engine = create_engine(database_url)
    with Session(engine) as session:
        assert organisation_subject(session, "org_civil_affairs").type == "department"
    _ok(home, database_url, "orgs", "retire", "org_civil_affairs")
    with Session(engine) as session:
        retired = organisation_subject(session, "org_civil_affairs")
        assert (retired.type, retired.communities) == ("unknown", ())
    engine.dispose()
    assert "org_civil_affairs" not in _ok(home, database_url, "orgs", "list")
