"""The command line as an operator uses it: real processes, one-line errors, exit codes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from vault.demo import COMMITTEE_OFFICE_PHONES

# The demo's community worker, for the purpose of the counter (a registered one).
AS_WORKER = ("--as", "community.xf", "--purpose", "counter-service")


def _run(
    home: Path, database_url: str, *args: str, lang: str = "en"
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "VAULT_HOME": str(home),
        "VAULT_DATABASE_URL": database_url,
        "VAULT_LANG": lang,
    }
    return subprocess.run(
        [sys.executable, "-c", "from api.cli.main import main; main()", "--log-console", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.fixture
def demo_home(tmp_path: Path, database_url: str) -> Path:
    home = tmp_path / "vault-home"
    result = _run(home, database_url, "init", "--demo", "--residents", "60")
    assert result.returncode == 0, result.stderr
    assert "60 residents" in result.stdout
    return home


def test_init_creates_private_keys_and_refuses_to_overwrite(
    demo_home: Path, database_url: str
) -> None:
    keyring = demo_home / "keyring.json"
    assert stat.S_IMODE(keyring.stat().st_mode) == 0o600
    credentials = demo_home / "demo-credentials.json"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    accounts = json.loads(credentials.read_text(encoding="utf-8"))
    assert {u["role"] for u in accounts["users"]} >= {
        "resident",
        "grid_worker",
        "community_worker",
        "auditor",
    }
    assert any(c["organisation_type"] == "property_company" for c in accounts["clients"])
    assert stat.S_IMODE(demo_home.stat().st_mode) == 0o700
    before = keyring.read_bytes()
    again = _run(demo_home, database_url, "init")
    assert again.returncode == 1
    assert again.stderr.strip().count("\n") == 0 and "already initialised" in again.stderr
    assert keyring.read_bytes() == before


def test_commands_refuse_to_run_without_a_keyring(tmp_path: Path, database_url: str) -> None:
    result = _run(
        tmp_path / "empty", database_url, "lookup", "--as", "x.y", "--phone", "13812345678"
    )
    assert result.returncode == 1
    assert "resident-vault init" in result.stderr


def test_lookup_quality_export_erase(demo_home: Path, database_url: str) -> None:
    placeholder = COMMITTEE_OFFICE_PHONES["cm_xingfu"]
    found = _run(demo_home, database_url, "lookup", *AS_WORKER, "--phone", f"+86 {placeholder}")
    assert found.returncode == 0, found.stderr
    ids = found.stdout.split()
    assert len(ids) == 3  # the demo plants the office number on three residents

    report = _run(demo_home, database_url, "quality")
    assert report.returncode == 0, report.stderr
    for resident_id in ids:
        assert resident_id in report.stdout
    assert "office-phone" in report.stdout and "shared-phone" in report.stdout
    assert placeholder not in report.stdout  # findings name residents, never values

    exported = _run(demo_home, database_url, "export", ids[0], *AS_WORKER)
    document = json.loads(exported.stdout)
    assert document["resident_id"] == ids[0]
    assert document["fields"]["phone"] == placeholder
    assert document["treatments"]["phone"] == "clear"

    refused = _run(demo_home, database_url, "erase", ids[0], "--reason", "request")
    assert refused.returncode == 1 and "--yes" in refused.stderr
    erased = _run(demo_home, database_url, "erase", ids[0], "--reason", "request", "--yes")
    assert erased.returncode == 0, erased.stderr
    after = _run(demo_home, database_url, "lookup", *AS_WORKER, "--phone", placeholder)
    assert after.stdout.split() == ids[1:]
    gone = _run(demo_home, database_url, "export", ids[0], *AS_WORKER)
    assert gone.returncode == 1 and "not found" in gone.stderr


def test_keys_rotate_and_list(demo_home: Path, database_url: str) -> None:
    rotated = _run(demo_home, database_url, "keys", "rotate", "--data-keys", "--destroy-retired")
    assert rotated.returncode == 0, rotated.stderr
    assert "rewrapped 60" in rotated.stdout and "new data keys for 60" in rotated.stdout
    assert "destroyed 1" in rotated.stdout
    listed = _run(demo_home, database_url, "keys", "list")
    assert listed.stdout.count("kek-") == 1 and "(active)" in listed.stdout


def test_bad_import_names_lines_and_writes_nothing(
    demo_home: Path, database_url: str, tmp_path: Path
) -> None:
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text(
        "building_id,unit,room,name,phone\n"
        "bd_xf_01,1,101,王小明,13812345678\n"
        "bd_xf_01,1,102,李四,999\n",
        encoding="utf-8",
    )
    result = _run(demo_home, database_url, "import", str(csv_path))
    assert result.returncode == 1
    assert "line 3 phone" in result.stderr and "nothing imported" in result.stderr
    missing = _run(demo_home, database_url, "lookup", *AS_WORKER, "--phone", "13812345678")
    assert missing.returncode == 3


def test_chinese_is_the_default_language(demo_home: Path, database_url: str) -> None:
    result = _run(
        demo_home, database_url, "lookup", *AS_WORKER, "--phone", "13000000000", lang="zh"
    )
    assert result.returncode == 3 and "未找到" in result.stderr


def test_cli_commands_leave_a_verifiable_trail(demo_home: Path, database_url: str) -> None:
    before = _run(demo_home, database_url, "audit", "checkpoint")
    assert before.returncode == 0, before.stderr
    size_before = int(before.stdout.splitlines()[1])  # init's own events: vault, OAuth
    phone = COMMITTEE_OFFICE_PHONES["cm_xingfu"]
    found = _run(demo_home, database_url, "lookup", *AS_WORKER, "--phone", phone)
    resident_id = found.stdout.split()[0]
    assert _run(demo_home, database_url, "export", resident_id, *AS_WORKER).returncode == 0
    head = _run(demo_home, database_url, "audit", "checkpoint")
    assert head.returncode == 0, head.stderr
    lines = head.stdout.splitlines()
    # Each command's process asks policy afresh (one evaluation entry), then three search
    # entries and one read entry.
    assert int(lines[1]) == size_before + (1 + 3) + (1 + 1)
    assert lines[3] == ""
    assert lines[4].startswith("\u2014 resident-vault.example/demo/audit ")
    kept = demo_home.parent / "kept-checkpoint.txt"
    kept.write_text(head.stdout, encoding="utf-8")
    verified = _run(demo_home, database_url, "audit", "verify", "--against", str(kept))
    assert verified.returncode == 0, verified.stderr
    assert f"{size_before + 6} entries" in verified.stdout
    assert "external checkpoint matches" in verified.stdout
    key = _run(demo_home, database_url, "audit", "public-key").stdout.strip()
    assert key.startswith("resident-vault.example/demo/audit+")
