"""Graceful shutdown of a real `resident-vault serve`: SIGTERM while a large export streams.

The service stops accepting, lets the export finish with its full body (its audit entries
commit), signs a last checkpoint that covers every entry, and exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from audit.models import AuditCheckpoint, AuditEntry
from tests.demo_server import free_port

ROOT = Path(__file__).resolve().parents[1]
RESIDENTS = 1000  # an export of them takes seconds here: long enough to be cut short


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "OTEL_"))}
    env.update(
        VAULT_HOME=str(home),
        VAULT_SHUTDOWN_GRACE_SECONDS="60",
        # Only the final checkpoint runs after start-up, so it alone must cover the export.
        VAULT_CHECKPOINT_INTERVAL_SECONDS="3600",
        VAULT_LANG="en",
    )
    port = free_port()
    command = [
        sys.executable,
        "-c",
        "from api.cli.main import main; main()",
        "serve",
        "--port",
        str(port),
        "--demo",
        "--residents",
        str(RESIDENTS),
    ]
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        assert process.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
        assert time.monotonic() < deadline, "the service did not start"
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    try:
        yield process, url, home
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


def test_sigterm_finishes_the_export_then_checkpoints_it(
    service: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    process, url, home = service
    credentials = json.loads((home / "demo-credentials.json").read_text(encoding="utf-8"))
    client = next(c for c in credentials["clients"] if c["organisation"] == "org_civil_affairs")
    token = httpx.post(
        f"{url}/oauth/token",
        data={"grant_type": "client_credentials", "scope": " ".join(client["scopes"])},
        auth=(client["client_id"], client["client_secret"]),
    ).json()["access_token"]
    headers = {
        "Authorization": f"Bearer {token}",
        "Purpose": "subsidy-review",
        "Justification": "annual-review",
    }
    # The same export without interruption: what a whole body holds.
    whole = httpx.get(
        f"{url}/v1/exports/residents", params={"format": "ndjson"}, headers=headers, timeout=120
    )
    assert whole.status_code == 200, whole.text
    expected = len(whole.text.splitlines())
    lines: list[str] = []
    with httpx.stream(
        "GET",
        f"{url}/v1/exports/residents",
        params={"format": "ndjson"},
        headers=headers,
        timeout=120,
    ) as export:
        assert export.status_code == 200
        export_id = export.headers["Export-Id"]
        decision_id = export.headers["Decision-Id"]
        chunks = export.iter_lines()
        lines.append(next(chunks))
        process.send_signal(signal.SIGTERM)  # mid-stream
        time.sleep(1.0)
        # Whether the service is still sending or has finished into the socket buffers and
        # exited depends on the machine's speed; what must hold is below: the whole body
        # arrives, every row has its entry, and a last checkpoint covers them.
        with pytest.raises(httpx.TransportError):  # it no longer accepts
            httpx.get(f"{url}/healthz", timeout=2)
        lines += [line for line in chunks if line]
    rows = [json.loads(line) for line in lines]
    assert process.wait(timeout=90) == 0
    assert export_id

    engine = create_engine(f"sqlite:///{home / 'vault.db'}")
    try:
        with engine.connect() as connection:
            entries = connection.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(
                    AuditEntry.decision_id == decision_id, AuditEntry.kind.in_(("access", "decoy"))
                )
            )

            total = connection.scalar(select(func.count()).select_from(AuditEntry))
            last = connection.scalar(select(func.max(AuditCheckpoint.tree_size)))
    finally:
        engine.dispose()
    # The body was whole, every row sent (decoys among them) has its entry, and the last
    # checkpoint covers every entry of the log.
    assert len(rows) == expected > RESIDENTS // 2
    assert entries == len(rows)
    assert last == total
