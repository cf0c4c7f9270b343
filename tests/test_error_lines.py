"""No exception reaches the log as anything but one structlog JSON line (issue 19 item 6):
an exception no handler answers (a 500 problem, and one line naming its type), one in the
middle of a streamed answer, and uvicorn's own error path (a request it cannot parse), with
the log configuration `serve` gives uvicorn (`api.http.tls.uvicorn_options`)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.demo_server import free_port

SERVER = """
import sys
import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from api.http.problems import UnhandledErrors, install_problem_handlers
from api.http.settings import HttpSettings
from api.http.tls import uvicorn_options
from api.logging import configure_logging

configure_logging()
app = FastAPI()
install_problem_handlers(app)
app.add_middleware(UnhandledErrors)

@app.get("/boom")
def boom() -> None:
    raise RuntimeError("a message that must not be logged: 13812345678")

@app.get("/stream")
def stream() -> StreamingResponse:
    def rows():
        yield b"first row\\n"
        raise LookupError("13812345678")
    return StreamingResponse(rows(), media_type="application/x-ndjson")

options = uvicorn_options(HttpSettings())
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            **options.uvicorn_kwargs)
"""


def _wait(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/none", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("the server did not start")


def test_every_error_is_one_json_line(tmp_path: Path) -> None:
    port = free_port()
    script = tmp_path / "server.py"
    script.write_text(SERVER, encoding="utf-8")
    root = Path(__file__).resolve().parent.parent
    with subprocess.Popen(
        [sys.executable, str(script), str(port)],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    ) as server:
        try:
            _wait(port)
            failed = httpx.get(f"http://127.0.0.1:{port}/boom")
            assert failed.status_code == 500
            assert failed.headers["content-type"].startswith("application/problem+json")
            problem = failed.json()
            assert problem["type"] == f"http://127.0.0.1:{port}/problems/internal-error"
            assert problem["detail"]
            with contextlib.suppress(httpx.HTTPError):  # cut short: it was under way
                httpx.get(f"http://127.0.0.1:{port}/stream").read()
            with socket.create_connection(("127.0.0.1", port)) as raw:
                raw.sendall(b"NOT HTTP AT ALL\r\n\r\n")
                raw.recv(1024)
            time.sleep(0.5)
        finally:
            server.terminate()
            _, stderr = server.communicate(timeout=30)
    lines = [line for line in stderr.splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]  # every line is JSON, or this fails
    failures = [e for e in events if e.get("event") == "request.failed"]
    assert {e["error"] for e in failures} == {"RuntimeError", "LookupError"}
    assert any(e.get("logger", "").startswith("uvicorn") for e in events), events
    assert "13812345678" not in stderr  # an exception's text never reaches the log
    assert "Traceback" not in stderr
