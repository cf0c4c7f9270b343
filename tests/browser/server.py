"""A demo service for page tests: demo data and accounts, plus the pages' public client
registered for the callback addresses of this test's origin (https://testserver for
in-process tests). The browser tests' server, on a free port, instead has the demo's own
client follow the address it listens on, as `serve --demo` does (api.pages.clients)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

from access.runtime import Runtime, init_runtime
from api.http.app import create_app
from api.oauth.scopes import PEOPLE_SCOPES, Scope
from api.oauth.service import create_demo_accounts, register_client
from api.pages.clients import follow_origins, listen_origins
from api.settings import Settings
from tests.demo_server import free_port, serving
from vault.demo import populate

AREAS = ("portal", "desk", "console", "operator")


def prepare(
    home: Path,
    database_url: str,
    origin: str,
    residents: int = 60,
    *,
    follow: list[str] | None = None,
) -> tuple[Settings, dict[str, Any]]:
    """With `follow`, the demo's pages' client is made to follow those origins (what
    `serve` does at start) and no client of its own is registered for `origin`."""
    settings = Settings(home=home, database_url=database_url, checkpoint_interval_seconds=0.3)
    runtime = init_runtime(settings)
    try:
        with runtime.transaction() as session:
            populate(session, runtime.vault.store, residents)
        with runtime.transaction() as session:
            credentials = create_demo_accounts(session, runtime)
        if follow is not None:
            with runtime.transaction() as session:
                follow_origins(session, runtime, follow)
            return settings, credentials
        with runtime.transaction() as session:
            register_client(
                session,
                runtime.audit,
                None,
                "public",
                [s.value for s in Scope if s in PEOPLE_SCOPES],
                (),
                [f"{origin}/{area}/callback" for area in AREAS],
                first_party=True,
                name="pages under test",
                actor="tests",
            )
    finally:
        runtime.close()
    return settings, credentials


@dataclass
class PagesServer:
    url: str
    credentials: dict[str, Any]
    app: Any

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    def user(self, role: str, **match: Any) -> dict[str, Any]:
        for user in self.credentials["users"]:
            if user["role"] == role and all(user.get(k) == v for k, v in match.items()):
                return user
        raise LookupError(role)

    def client(self, organisation: str) -> dict[str, Any]:
        return next(c for c in self.credentials["clients"] if c["organisation"] == organisation)

    def client_token(self, organisation: str) -> str:
        client = self.client(organisation)
        response = httpx.post(
            f"{self.url}/oauth/token",
            data={"grant_type": "client_credentials", "scope": " ".join(client["scopes"])},
            auth=(client["client_id"], client["client_secret"]),
        )
        response.raise_for_status()
        return str(response.json()["access_token"])


@contextmanager
def run_pages_server(home: Path, database_url: str) -> Iterator[PagesServer]:
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    # As `serve --demo --port <port>`: the demo registered its client for port 8000 only.
    settings, credentials = prepare(
        home, database_url, origin, follow=listen_origins("http", "127.0.0.1", port)
    )
    app = create_app(settings)
    with serving(app, port):
        yield PagesServer(origin, credentials, app)


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hidden: dict[str, str] = {}
        self.action: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = a.get("action")
        if tag == "input" and a.get("type") == "hidden" and a.get("name"):
            self.hidden[str(a["name"])] = a.get("value") or ""


def hidden_fields(html: str) -> dict[str, str]:
    parser = _Forms()
    parser.feed(html)
    return parser.hidden


def sign_in(client: httpx.Client, area: str, username: str, password: str) -> httpx.Response:
    """Sign in to a page area the way a browser does: page → login form → callback."""
    form = client.get(f"/{area}/login", follow_redirects=True)
    assert form.status_code == 200, form.text[:300]
    parser = _Forms()
    parser.feed(form.text)
    action = urljoin(str(form.url), parser.action or "")
    fields = {**parser.hidden, "username": username, "password": password}
    return client.post(action, data=fields, follow_redirects=True)
