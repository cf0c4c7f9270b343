"""docs/walkthrough.md, run as written: its shell block, line by line in one bash, on an
empty PostgreSQL database with the OPA server (issue 19). A step the docs give that does
not work fails here."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from tests.conftest import _require_postgres
from tests.demo_server import free_port, require_opa

ROOT = Path(__file__).resolve().parents[1]
WALKTHROUGH = ROOT / "docs" / "walkthrough.md"


def walkthrough_script() -> str:
    """The block between `# walkthrough` and `# end walkthrough`, as the docs show it."""
    text_ = WALKTHROUGH.read_text(encoding="utf-8")
    start = text_.index("# walkthrough\n")
    end = text_.index("# end walkthrough\n")
    return text_[start:end]


@pytest.fixture
def empty_database() -> Iterator[str]:
    url = _require_postgres()
    name = f"rv_walk_{secrets.token_hex(6)}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_the_walkthrough_works_as_written(empty_database: str, tmp_path: Path) -> None:
    opa = require_opa()
    script = tmp_path / "walkthrough.sh"
    # -e: the first step that fails stops the walk; the servers it started go with it.
    script.write_text(
        "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n"
        + walkthrough_script(),
        encoding="utf-8",
    )
    bin_dirs = [str(Path(opa).parent), str(Path(sys.executable).parent)]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VAULT_")},
        "PATH": os.pathsep.join([*bin_dirs, os.environ.get("PATH", "")]),
        "VAULT_HOME": str(tmp_path / "home"),
        "VAULT_DATABASE_URL": empty_database,
        "VAULT_PORT": str(free_port()),
        "OPA_PORT": str(free_port()),
        "VAULT_LANG": "en",
    }
    bash = shutil.which("bash") or "/bin/bash"
    process = subprocess.Popen(
        [bash, str(script)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"the walkthrough did not finish:\n{output[-3000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    assert process.returncode == 0, output[-4000:]
    assert "true" in output.splitlines(), "the department read residents"
    assert "Traceback" not in output
