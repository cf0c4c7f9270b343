"""`python -m bench all` at smoke size: every figure measured, with its baseline, and the
ratio in the JSON is ours / baseline (bench/suite.py). SQLite always; PostgreSQL when
VAULT_TEST_DATABASE_URL names a server (the bench makes its own databases, dropped here)."""

from __future__ import annotations

import json
import math
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
PG_ENV = "VAULT_TEST_DATABASE_URL"
SQLITE_FIGURES = {"1a", "1b", "1c", "1d", "2a", "2b", "3", "4", "5a", "5b", "6"}
POSTGRES_FIGURES = SQLITE_FIGURES | {"7a", "7b"}

pytestmark = pytest.mark.slow


def _drop(server: str, names: list[str]) -> None:
    engine = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            for name in names:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_bench_all_smoke(backend: str, tmp_path: Path) -> None:
    args = ["--backends", backend]
    names: list[str] = []
    server = os.environ.get(PG_ENV)
    if backend == "postgresql":
        if not server:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"CI=true but {PG_ENV} is not set")
            pytest.skip(f"PostgreSQL not configured ({PG_ENV})")
        name = f"rv_bench_test_{secrets.token_hex(4)}"
        names = [name, f"{name}_plain", f"{name}_scratch"]
        args += ["--pg-name", name]
    out = tmp_path / "bench.json"
    command = [sys.executable, "-m", "bench", "all", "--residents", "500", "--seconds", "1"]
    command += ["--workdir", str(tmp_path / "work"), "--json", str(out), *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run(
            command,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        if server and names:
            _drop(server, names)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "VAULT_RATE_LIMIT_STANDARD" in done.stdout  # it says what it lifted
    report = json.loads(out.read_text())
    assert report["ratio"] == "ours / baseline"
    rows = {row["key"]: row for row in report["runs"][backend]}
    expected = POSTGRES_FIGURES if backend == "postgresql" else SQLITE_FIGURES
    assert set(rows) == expected
    for key, row in rows.items():
        assert row["error"] is None, (key, row["error"])
        for column in ("ours", "baseline", "ratio"):
            assert isinstance(row[column], float), (key, column, row[column])
            assert math.isfinite(row[column]), (key, column)
        assert row["ratio"] == pytest.approx(row["ours"] / row["baseline"]), key
