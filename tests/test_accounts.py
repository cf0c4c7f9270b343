"""`resident-vault accounts` and the data commands through the gate (issue 19): a district
makes its staff accounts from commands, each change audited and each refusal one line with
nothing written; `lookup` and `export` act as an account or an organisation, for a
registered purpose, and see what policy lets that caller see."""

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

from access.exports.records import ExportRecord
from access.purposes import registered_purposes
from access.runtime import open_runtime
from access.subjects import subject_for
from api.cli.acting import policy_gate
from api.cli.main import app
from api.oauth.passwords import verify_password
from api.settings import Settings
from audit.models import AuditEntry
from vault.accounts import User
from vault.demo import COMMITTEE_OFFICE_PHONES

OFFICE_PHONE = COMMITTEE_OFFICE_PHONES["cm_xingfu"]  # planted on three demo residents


def _env(home: Path, database_url: str) -> dict[str, str]:
    return {"VAULT_HOME": str(home), "VAULT_DATABASE_URL": database_url, "VAULT_LANG": "en"}


def _run(
    home: Path, database_url: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """A refusal, as the operator sees it: a real process, its one line on stderr."""
    return subprocess.run(
        [sys.executable, "-c", "from api.cli.main import main; main()", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env={**os.environ, **_env(home, database_url)},
        timeout=120,
        check=False,
    )


def _invoke(home: Path, database_url: str, *args: str, stdin: str | None = None) -> Any:
    return CliRunner().invoke(app, ["--log-json", *args], env=_env(home, database_url), input=stdin)


def _ok(home: Path, database_url: str, *args: str, stdin: str | None = None) -> str:
    """A command that succeeds, run in this process (a process start costs seconds)."""
    result = _invoke(home, database_url, *args, stdin=stdin)
    assert result.exit_code == 0, result.output
    return str(result.stdout)


def _objects(text: str, key: str) -> list[dict[str, Any]]:
    """The JSON objects a command printed that have `key` (log events have not)."""
    found = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [item for item in found if key in item]


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert lines[0].startswith("resident-vault: "), lines
    return lines[0]


def _entries(database_url: str, *actions: str) -> list[AuditEntry]:
    engine = create_engine(database_url)
    try:
        with Session(engine) as session:
            query = select(AuditEntry).where(AuditEntry.action.in_(actions))
            return list(session.scalars(query.order_by(AuditEntry.recorded_at)))
    finally:
        engine.dispose()


def _user(database_url: str, username: str) -> User:
    engine = create_engine(database_url)
    try:
        with Session(engine) as session:
            user = session.scalars(select(User).where(User.username == username)).one()
            session.expunge(user)
            return user
    finally:
        engine.dispose()


def _accounts(home: Path, database_url: str) -> dict[str, dict[str, Any]]:
    listed = _ok(home, database_url, "accounts", "list", "--disabled", "--json")
    return {row["username"]: row for row in _objects(listed, "username")}


@pytest.fixture
def demo_home(tmp_path: Path, database_url: str) -> Path:
    home = tmp_path / "home"
    _ok(home, database_url, "init", "--demo", "--residents", "20")
    return home


# -- accounts -----------------------------------------------------------------------------------


def test_staff_accounts_are_added_listed_disabled_and_reset_from_commands(
    demo_home: Path, database_url: str
) -> None:
    add = ["accounts", "add", "grid.east", "--org", "org_rc_xingfu", "--role", "grid_worker"]
    printed = _ok(demo_home, database_url, *add, "--grid", "gd_xf_2", "--actor", "ops:li", "--json")
    (added,) = _objects(printed, "username")
    # The jurisdiction is the grid's: its community and its buildings.
    assert added["jurisdiction"] == {
        "community": "cm_xingfu",
        "grids": ["gd_xf_2"],
        "buildings": ["bd_xf_04", "bd_xf_05", "bd_xf_06"],
    }
    password = added["one_time_password"]
    assert len(password) >= 16 and verify_password(
        _user(database_url, "grid.east").password_hash, password
    )
    (entry,) = _entries(database_url, "account.added")
    assert (entry.user, entry.channel, entry.organisation) == ("ops:li", "cli", "org_rc_xingfu")
    assert entry.details["username"] == "grid.east"

    # A password of one's own, from standard input: nothing is printed but the line.
    chosen = "correct horse battery staple"
    shown = _ok(
        demo_home,
        database_url,
        *["accounts", "add", "ops.audit", "--org", "org_civil_affairs", "--role", "auditor"],
        "--password-stdin",
        stdin=chosen + "\n",
    )
    assert "added account ops.audit (auditor)" in shown and "one-time" not in shown
    assert verify_password(_user(database_url, "ops.audit").password_hash, chosen)

    # A reset prints a new one-time password, once; the old one no longer matches.
    reset = _ok(demo_home, database_url, "accounts", "reset-password", "ops.audit")
    new = reset.split("give it to the person directly): ")[1].split()[0]
    stored = _user(database_url, "ops.audit").password_hash
    assert verify_password(stored, new) and not verify_password(stored, chosen)

    _ok(demo_home, database_url, "accounts", "disable", "grid.east")
    assert "grid.east" not in _ok(demo_home, database_url, "accounts", "list")
    accounts = _accounts(demo_home, database_url)
    assert accounts["grid.east"]["disabled"] is True and accounts["grid.xf1"]["disabled"] is False

    # Every change is in the log, and no password is, anywhere in it.
    changes = _entries(database_url, "account.added", "account.password_reset", "account.disabled")
    assert [e.action for e in changes] == [
        "account.added",
        "account.added",
        "account.password_reset",
        "account.disabled",
    ]
    for secret in (password, chosen, new):
        assert all(secret not in json.dumps(e.details) for e in changes)
    # A disabled account does nothing more, from the command line either.
    refused = _run(
        demo_home, *[database_url, "lookup", "--as", "grid.east", "--phone", OFFICE_PHONE]
    )
    assert "account grid.east is disabled" in _one_line(refused)


BAD_ACCOUNTS: list[tuple[list[str], str]] = [
    (["add", "x.one", "--org", "org_none", "--role", "auditor"], "no such organisation"),
    (["add", "x.one", "--org", "org_oc_xingfu", "--role", "auditor"], "is retired"),
    (
        ["add", "x.one", "--org", "org_rc_xingfu", "--role", "grid_worker", "--grid", "gd_hx_1"],
        "gd_hx_1 is not among the places organisation org_rc_xingfu serves",
    ),
    (
        ["add", "x.one", "--org", "org_rc_xingfu", "--role", "grid_worker", "--grid", "gd_no"],
        "no such grid",
    ),
    (["add", "x.one", "--org", "org_rc_xingfu", "--role", "grid_worker"], "needs a grid"),
    (["add", "x.one", "--org", "org_rc_xingfu", "--role", "mayor"], "unknown role: mayor"),
    (["add", "x.one", "--org", "org_rc_xingfu", "--role", "resident"], "for staff"),
    (["add", "grid.xf1", "--org", "org_rc_xingfu", "--role", "auditor"], "already in use"),
    (["add", "X One", "--org", "org_rc_xingfu", "--role", "auditor"], "invalid username"),
    (["disable", "nobody"], "no such account: nobody"),
    (["reset-password", "nobody"], "no such account: nobody"),
]
WEAK = ["short", "aaaaaaaaaaaaaaaa", "abababababababab", "my-x.one-password", ""]


def test_a_bad_account_is_one_line_and_writes_nothing(demo_home: Path, database_url: str) -> None:
    _ok(demo_home, database_url, "orgs", "retire", "org_oc_xingfu")
    before = _accounts(demo_home, database_url)
    for args, says in BAD_ACCOUNTS:
        assert says in _one_line(_run(demo_home, database_url, "accounts", *args)), args
    add = ["accounts", "add", "x.one", "--org", "org_rc_xingfu", "--role", "auditor"]
    for weak in WEAK:
        refused = _run(demo_home, database_url, *add, "--password-stdin", stdin=weak + "\n")
        line = _one_line(refused)
        assert "too weak" in line or "no password on standard input" in line, weak
    assert _accounts(demo_home, database_url) == before
    assert _entries(database_url, "account.added", "account.disabled") == []


def test_an_operator_gets_no_resident_data(demo_home: Path, database_url: str) -> None:
    add = ["accounts", "add", "ops.li", "--org", "org_civil_affairs", "--role", "operator"]
    _ok(demo_home, database_url, *add)
    settings = Settings(home=demo_home, database_url=database_url)
    runtime = open_runtime(settings)
    try:
        gate = policy_gate(runtime)
        with runtime.vault.sessions() as session:
            user = session.scalars(select(User).where(User.username == "ops.li")).one()
            assert user.role == "operator"

            class Caller:
                client_id, username, organisation = "cl_web", "ops.li", None

            subject = subject_for(session, Caller())
            purposes = registered_purposes(session)
        assert subject.type == "operator"
        # Policy lets an operator nothing, for any purpose, in any way.
        for purpose in purposes:
            for action in ("read", "list", "search", "export", "write", "stats"):
                assert not gate.hypothetical(subject, purpose, action).allow, (purpose, action)
    finally:
        runtime.close()
    for purpose in ("grid-service", "subsidy-review"):
        found = _invoke(
            demo_home, database_url, "lookup", "--as", "ops.li", "--purpose", purpose,
            "--phone", OFFICE_PHONE,
        )  # fmt: skip
        assert found.exit_code == 1 and "r_" not in found.stdout
    denied = [e for e in _entries(database_url, "search") if e.user == "ops.li"]
    assert len(denied) == 2 and {(e.outcome, e.subject_type) for e in denied} == {
        ("denied", "operator")
    }


# -- lookup and export through the gate ---------------------------------------------------------


def test_lookup_and_export_see_what_policy_lets_the_caller_see(
    demo_home: Path, database_url: str
) -> None:
    by_phone = ["lookup", "--phone", OFFICE_PHONE]
    worker = _ok(
        demo_home, database_url, *by_phone, "--as", "grid.xf1", "--purpose", "grid-service"
    )
    ids = worker.split()
    assert len(ids) == 3 and all(i.startswith("r_") for i in ids)
    searched = [e for e in _entries(database_url, "search") if e.user == "grid.xf1"]
    assert {e.resident_id for e in searched} == set(ids)
    assert {(e.channel, e.purpose, e.outcome, e.subject_type) for e in searched} == {
        ("cli", "grid-service", "allowed", "grid_worker")
    }
    assert all(set(e.fields) == {"phone"} and e.decision_id for e in searched)
    # A department sees the same residents under its own pseudonyms.
    department = _ok(
        demo_home, *[database_url, *by_phone], "--as-org", "org_civil_affairs",
        "--purpose", "subsidy-review",
    )  # fmt: skip
    assert len(department.split()) == 3 and all(p.startswith("ps_") for p in department.split())
    # Another community's grid worker finds no one (exit 3).
    other = _invoke(
        demo_home, database_url, *by_phone, "--as", "grid.hx1", "--purpose", "grid-service"
    )
    assert other.exit_code == 3

    # Export: the fields policy lets a grid worker have, as it treats them.
    exported = _ok(
        demo_home,
        *[database_url, "export", ids[0], "--as", "grid.xf1"],
        "--purpose",
        "grid-service",
    )
    document = json.loads(exported)
    assert document["resident_id"] == ids[0]
    assert document["treatments"]["religion"] == "denied" and "religion" not in document["fields"]
    assert (
        document["treatments"]["id_number"] == "masked" and "*" in document["fields"]["id_number"]
    )
    (read,) = [e for e in _entries(database_url, "read") if e.user == "grid.xf1"]
    assert read.resident_id == ids[0] and read.fields["religion"] == "denied"
    # A resident's own copy: everything, in clear.
    own = json.loads(_ok(demo_home, database_url, "export", "--as", "resident1"))
    assert set(own["treatments"].values()) <= {"clear", "denied"}
    assert "*" not in json.dumps(own["fields"], ensure_ascii=False)

    # Without a resident, an organisation's bulk export: under its pseudonyms, recorded
    # and fingerprinted like the HTTP one, with its reason in the entries.
    bulk = _invoke(
        demo_home, database_url, "export", "--as-org", "org_civil_affairs",
        "--purpose", "subsidy-review", "--justification", "annual review", "--format", "csv",
    )  # fmt: skip
    assert bulk.exit_code == 0, bulk.output
    rows = [line for line in bulk.stdout.splitlines() if line.startswith(("ps_", '"ps_'))]
    assert len(rows) >= 20  # every resident, and the export's decoys
    engine = create_engine(database_url)
    with Session(engine) as session:
        (record,) = session.scalars(select(ExportRecord))
        assert (record.organisation, record.purpose, record.state) == (
            "org_civil_affairs",
            "subsidy-review",
            "complete",
        )
    engine.dispose()
    exported_entries = _entries(database_url, "export")
    assert len(exported_entries) == record.rows
    assert {e.details.get("justification") for e in exported_entries} == {"annual review"}


def test_a_data_command_without_a_caller_or_a_registered_purpose_is_refused(
    demo_home: Path, database_url: str
) -> None:
    lookup = ["lookup", "--phone", OFFICE_PHONE]
    unknown = _run(
        demo_home, database_url, *lookup, "--as", "grid.xf1", "--purpose", "registration"
    )
    assert "unknown purpose: registration (registered: " in _one_line(unknown)
    (recorded,) = [e for e in _entries(database_url, "search") if e.user == "grid.xf1"]
    assert (recorded.outcome, recorded.reason) == ("denied", "unknown-purpose")
    nobody = _run(demo_home, database_url, *lookup, "--purpose", "grid-service")
    assert "--as USERNAME or --as-org" in _one_line(nobody)
    both = _run(
        demo_home, *[database_url, *lookup, "--as", "grid.xf1", "--as-org", "org_health"],
        "--purpose", "grid-service",
    )  # fmt: skip
    assert "--as USERNAME or --as-org" in _one_line(both)
    outside = _run(
        demo_home, *[database_url, *lookup, "--as-org", "org_anju_property"],
        "--purpose", "property-notice",
    )  # fmt: skip
    assert "not permitted" in _one_line(outside)
    stranger = _run(
        demo_home, database_url, "export", "--as", "nobody", "--purpose", "grid-service"
    )
    assert "no such account: nobody" in _one_line(stranger)
