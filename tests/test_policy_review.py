"""`resident-vault policy diff` and `policy explain`: a planted change is reported exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from policies import EmbeddedEngine, load_bundle
from policies.review import diff_tables, load_policy, policy_table, review_subjects

CLI = [sys.executable, "-c", "from api.cli.main import main; main()"]


def run_cli(*args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VAULT_HOME": str(home or Path("/nonexistent-vault"))}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


def write_policy(root: Path, change: Any = None) -> Path:
    """The shipped policy as a directory, with `change(data)` applied to its data."""
    bundle = load_bundle()
    data = bundle.data
    if change is not None:
        change(data)
    bundle.with_data(data).write(root)
    return root


def plant(data: dict[str, Any]) -> None:
    # 1. Property notices also show the name, masked. (Asking for the phone in clear would
    #    change nothing: it is a linking key the purpose does not declare, so it stays masked.)
    data["purposes"]["property-notice"]["fields"]["name"] = "masked"
    # 2. Every department gains elderly-care visits by default (a subject type's mandate
    #    is policy; an organisation's own is the district's data, in the database).
    data["mandates"]["subject_types"]["department"]["purposes"].append("elderly-care-visit")


def changes_of(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_diff_reports_a_planted_change_exactly(tmp_path: Path) -> None:
    old = write_policy(tmp_path / "old")
    new = write_policy(tmp_path / "new", plant)
    done = run_cli("policy", "diff", str(old), str(new), "--json")
    assert done.returncode == 0, done.stderr
    changes = changes_of(done.stdout)
    named = [c for c in changes if c["purpose"] == "property-notice"]
    # Exactly the property company, for each action the purpose permits, gains the name.
    assert sorted((c["subject"], c["action"]) for c in named) == [
        ("type:property_company", "list"),
        ("type:property_company", "read"),
    ]
    assert all(
        (c["what"], c["name"], c["before"], c["after"], c["direction"])
        == ("field", "name", "denied", "masked", "gains")
        for c in named
    )
    rest = [c for c in changes if c["purpose"] != "property-notice"]
    assert {c["subject"] for c in rest} == {"type:department"}
    assert {c["purpose"] for c in rest} == {"elderly-care-visit"}
    access = sorted(c["action"] for c in rest if c["what"] == "access")
    assert access == ["list", "read", "search"]  # the purpose's actions, now allowed
    assert all(c["direction"] == "gains" for c in rest)
    # The fields gained are exactly what the new policy shows a department for the purpose.
    with EmbeddedEngine(load_policy(new)) as engine:
        data = load_policy(new).data
        table = policy_table(
            engine, data, review_subjects(data), purposes=["elderly-care-visit"], actions=["read"]
        )
    shown = {
        n
        for n, t in table["type:department", "elderly-care-visit", "read"].fields.items()
        if t != "denied"
    }
    gained = {c["name"] for c in rest if c["what"] == "field" and c["action"] == "read"}
    assert gained == shown


def test_no_change_means_an_empty_diff_and_a_clean_exit(tmp_path: Path) -> None:
    old = write_policy(tmp_path / "old")
    same = write_policy(tmp_path / "same")
    done = run_cli("policy", "diff", str(old), str(same), "--fail-on-change")
    assert done.returncode == 0, done.stderr
    assert "0 处变化" in done.stdout
    new = write_policy(tmp_path / "new", plant)
    changed = run_cli("--lang", "en", "policy", "diff", str(old), str(new), "--fail-on-change")
    assert changed.returncode == 1
    assert "type:department" in changed.stdout and "name denied → masked" in changed.stdout


def test_diff_of_a_bundle_and_bad_input(tmp_path: Path) -> None:
    missing = run_cli("policy", "diff", str(tmp_path / "nope"), str(tmp_path / "nope"))
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "resident-vault:" in missing.stderr
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tarball")
    bad = run_cli("policy", "diff", str(junk), str(junk))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_a_rego_change_is_compiled_and_compared(tmp_path: Path) -> None:
    opa = os.environ.get("OPA_BIN", "")
    if not (opa and os.access(opa, os.X_OK)):
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but OPA_BIN is not set: run .ci/install-opa")
        pytest.skip("OPA_BIN is not set (run .ci/install-opa)")
    old = write_policy(tmp_path / "old")
    new = write_policy(tmp_path / "new")
    treatment = new / "vault/treatment/treatment.rego"
    source = treatment.read_text(encoding="utf-8")
    planted = source.replace(
        "least(wanted, purpose.sensitive_cap)", 'least(wanted, "denied")'
    )  # a sensitive cap now denies instead of masking
    assert planted != source
    treatment.write_text(planted, encoding="utf-8")
    old_bundle, new_bundle = load_policy(old), load_policy(new)
    subjects = review_subjects(old_bundle.data)
    from policies.review import policy_engine_for

    with policy_engine_for(old_bundle) as engine:
        before = policy_table(engine, old_bundle.data, subjects)
    with policy_engine_for(new_bundle) as engine:
        after = policy_table(engine, new_bundle.data, subjects)
    changes = diff_tables(before, after)
    assert changes
    capped = {
        code for code, spec in old_bundle.data["purposes"].items() if spec.get("sensitive_cap")
    }
    assert {c.purpose for c in changes} == capped
    assert all((c.what, c.before, c.after) == ("field", "masked", "denied") for c in changes)


def test_explain_on_the_command_line(tmp_path: Path) -> None:
    done = run_cli(
        "policy", "explain", "--as", "property_company", "--purpose", "subsidy-review", "--json"
    )
    assert done.returncode == 0, done.stderr
    explained = json.loads(done.stdout)
    assert explained["outcome"] == "denied"
    assert "deny:no-mandate" in explained["deciding_rules"]
    # An organisation of the vault here, with the mandate its database gives it.
    home = tmp_path / "vault"
    for step in (
        ["init"],
        ["places", "add", "street", "st_x", "--name", "X"],
        ["places", "add", "community", "cm_x", "--name", "X", "--parent", "st_x"],
        ["orgs", "add", "org_ca_x", "--kind", "department", "--name", "X", "--place", "cm_x"],
        ["mandates", "grant", "org_ca_x", "--purpose", "subsidy-review", "--action", "read"],
    ):
        made = run_cli(*step, home=home)
        assert made.returncode == 0, made.stderr
    text = run_cli(
        "--lang",
        "en",
        "policy",
        "explain",
        "--as",
        "org_ca_x",
        "--purpose",
        "subsidy-review",
        "--field",
        "id_number",
        home=home,
    )
    assert text.returncode == 0, text.stderr
    assert "linking key" in text.stdout and "ID number" in text.stdout
    unknown = run_cli("policy", "explain", "--as", "nobody", "--purpose", "subsidy-review")
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1
