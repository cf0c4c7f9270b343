"""Signing in on a port other than 8000: `resident-vault serve --demo --port <free port>`,
as an operator runs it, with nothing registered by hand. Before the pages' client
followed the address the service listens on, the demo's client knew port 8000 only and
every sign-in ended in "登录未完成，请重试" (`pages.no_client`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import sign_in
from tests.demo_server import free_port


@dataclass
class Served:
    url: str
    credentials: dict[str, Any]

    def user(self, role: str) -> dict[str, Any]:
        return next(u for u in self.credentials["users"] if u["role"] == role)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, chromium: Any) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("serve") / "home"
    port = free_port()
    assert port != 8000
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    env |= {"VAULT_HOME": str(home), "VAULT_LANG": "zh", "VAULT_CHECKPOINT_INTERVAL_SECONDS": "1"}
    log = home.parent / "serve.log"  # a file, not a pipe nobody drains
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from api.cli.main import main; main()",
                "serve",
                "--demo",
                "--residents",
                "20",
                "--port",
                str(port),
            ],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                text = log.read_text(encoding="utf-8", errors="replace")
                pytest.fail(f"serve --demo did not start:\n{text[-3000:]}")
            time.sleep(0.2)
        credentials = json.loads((home / "demo-credentials.json").read_text(encoding="utf-8"))
        yield Served(url, credentials)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_serve_demo_on_another_port_signs_in_to_the_portal_and_the_desk(
    served: Served, page: Any
) -> None:
    # sign_in waits for the area's own page, where only a finished login lands.
    sign_in(page, served, "portal", served.user("resident"))
    assert "登录未完成" not in page.content()
    page.context.clear_cookies()  # another person at the counter
    sign_in(page, served, "desk", served.user("grid_worker"))
    assert "登录未完成" not in page.content()
    assert page.url == f"{served.url}/desk/"
