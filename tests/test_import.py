"""CSV import: per-row validation, all or nothing, dry run."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from tests.factories import person, place
from vault.context import Vault
from vault.importer import STRUCTURE_COLUMNS, import_csv
from vault.models import Household, Resident
from vault.services import Provenance

IMPORTER = Provenance("cli:tester", "import")


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    columns = sorted({k for row in rows for k in row})
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: json.dumps(v, ensure_ascii=False)
                    if isinstance(v, list | dict)
                    else ("true" if v is True else "false" if v is False else v)
                    for k, v in row.items()
                }
            )
    return path


def _row(seed: int, room: str = "101", **overrides: Any) -> dict[str, Any]:
    return {"building_id": "bd_1", "unit": "1", "room": room, **person(seed), **overrides}


def _count(vault: Vault) -> int:
    with vault.sessions() as session:
        return session.scalar(select(func.count()).select_from(Resident)) or 0


def test_mixed_file_reports_each_bad_row_and_imports_nothing(vault: Vault, tmp_path: Path) -> None:
    with vault.sessions() as session, session.begin():
        place(session)
    good = _row(1)
    bad_check_digit = _row(2)
    bad_check_digit["id_number"] = bad_check_digit["id_number"][:-1] + (
        "0" if bad_check_digit["id_number"][-1] != "0" else "1"
    )
    bad_phone = _row(3, phone="12345")
    no_building = _row(4, building_id="bd_nowhere")
    duplicate = _row(
        5, id_number=good["id_number"], birth_date=good["birth_date"], gender=good["gender"]
    )
    path = _write(
        tmp_path / "residents.csv", [good, bad_check_digit, bad_phone, no_building, duplicate]
    )
    with vault.sessions() as session, session.begin():
        report = import_csv(session, vault.store, path, IMPORTER)
    by_line = {(e.line, e.column) for e in report.errors}
    assert by_line == {(3, "id_number"), (4, "phone"), (5, "building_id"), (6, "id_number")}
    assert report.rows == 5 and report.imported == 0
    assert _count(vault) == 0
    assert all("12345" not in e.message("en") for e in report.errors)
    said = {(e.line, e.column): (e.message("zh"), e.message("en")) for e in report.errors}
    assert said[(5, "building_id")] == ("楼栋不存在", "no such building")
    assert said[(6, "id_number")] == ("与第 2 行重复", "duplicates line 2")
    assert said[(4, "phone")] == ("手机号码应为11位", "a mobile number has 11 digits")


def test_good_file_imports_households_and_dry_run_writes_nothing(
    vault: Vault, tmp_path: Path
) -> None:
    with vault.sessions() as session, session.begin():
        place(session)
    rows = [
        _row(10, room="101", household="A"),
        _row(11, room="101", household="A"),
        _row(12, room="102"),
    ]
    path = _write(tmp_path / "residents.csv", rows)
    with vault.sessions() as session, session.begin():
        dry = import_csv(session, vault.store, path, IMPORTER, dry_run=True)
    assert dry.ok and dry.rows == 3 and _count(vault) == 0
    with vault.sessions() as session, session.begin():
        report = import_csv(session, vault.store, path, IMPORTER)
    assert report.ok and report.imported == 3 and report.households == 2
    with vault.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Household)) == 2
        found = vault.store.find(session, "id_number", rows[2]["id_number"])
        assert len(found) == 1
        record = vault.store.read(session, found[0])
        assert record["name"] == rows[2]["name"]
        assert vault.store.provenance(session, found[0])["name"].channel == "import"
    with vault.sessions() as session, session.begin():
        again = import_csv(session, vault.store, path, IMPORTER)
    assert {e.column for e in again.errors} == {"id_number"} and again.imported == 0
    assert {e.message("en") for e in again.errors} == {"this ID number is already in the vault"}


def test_unknown_column_is_refused(vault: Vault, tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text(",".join([*STRUCTURE_COLUMNS, "shoe_size"]) + "\nbd_1,1,101,,42\n")
    with vault.sessions() as session, session.begin():
        report = import_csv(session, vault.store, path, IMPORTER)
    assert [(e.line, e.column) for e in report.errors] == [(1, "shoe_size")]
    assert report.errors[0].message("zh") == "未知的列"
