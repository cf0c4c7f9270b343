"""A real service on a free port, with demo data and demo accounts, for HTTP tests.

The server runs uvicorn in a thread of the test process, so tests talk to it over a real
socket exactly as an integrator would, while assertions can still peek at the database.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import gc
import hashlib
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import uvicorn
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from access.runtime import Runtime, init_runtime
from api.http.app import create_app
from api.oauth.service import create_demo_accounts, create_user
from api.settings import Settings
from policies import CachedEngine, OpaServerEngine, PolicyEngine, build_bundle, load_bundle
from policies.opa_server import local_opa_server
from tests.conftest import IN_CI, _require_postgres
from vault.demo import populate
from vault.models import Building, Household, Resident, Room


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class DemoServer:
    url: str
    credentials: dict[str, Any]
    settings: Settings
    app: Any

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    def pseudonym(self, organisation: str, resident_id: str) -> str:
        """The organisation's pseudonym for a resident, as its own lists would show it."""
        pseudonym: str = self.app.state.gate.pseudonyms.of(organisation, resident_id)
        return pseudonym

    def resident_token(self, resident_id: str) -> str:
        """An account for the resident, made in the database, then an HTTP login."""
        username = f"r-{secrets.token_hex(5)}"
        password = secrets.token_urlsafe(16)
        with self.runtime.transaction() as session:
            create_user(
                session,
                self.runtime.audit,
                username=username,
                password=password,
                role="resident",
                resident_id=resident_id,
                actor="test",
            )
        return str(self.login(username, password, "me")["access_token"])

    def client(self, organisation: str) -> dict[str, Any]:
        return next(c for c in self.credentials["clients"] if c["organisation"] == organisation)

    def user(self, role: str, **match: Any) -> dict[str, Any]:
        for user in self.credentials["users"]:
            if user["role"] == role and all(user.get(k) == v for k, v in match.items()):
                return user
        raise LookupError(role)

    def client_token(self, organisation: str, scope: str | None = None) -> str:
        client = self.client(organisation)
        data = {"grant_type": "client_credentials", "scope": scope or " ".join(client["scopes"])}
        response = httpx.post(
            f"{self.url}/oauth/token",
            data=data,
            auth=(client["client_id"], client["client_secret"]),
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def login(self, username: str, password: str, scope: str) -> dict[str, Any]:
        """The authorization-code flow with PKCE, through the login form, as a browser does."""
        public = self.credentials["public_clients"][0]
        verifier = secrets.token_urlsafe(48)
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .decode()
            .rstrip("=")
        )
        redirect_uri = public["redirect_uris"][0]
        params = {
            "response_type": "code",
            "client_id": public["client_id"],
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": "s1",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        with httpx.Client(base_url=self.url, follow_redirects=False) as browser:
            form = browser.get("/oauth/authorize", params=params)
            form.raise_for_status()
            fields = hidden_inputs(form.text)
            fields.update({"username": username, "password": password})
            action = form_action(form.text) or "/oauth/authorize"
            posted = browser.post(
                action if action.startswith("/") else "/oauth/authorize",
                params=params if "?" not in action else None,
                data=fields,
            )
            assert posted.status_code in (302, 303), posted.text[:500]
            location = posted.headers["location"]
            query = parse_qs(urlsplit(location).query)
            assert query.get("state") == ["s1"]
            token = browser.post(
                "/oauth/token",
                data={
                    "grant_type": "authorization_code",
                    "code": query["code"][0],
                    "redirect_uri": redirect_uri,
                    "client_id": public["client_id"],
                    "code_verifier": verifier,
                },
            )
            token.raise_for_status()
            return dict(token.json())


class _Inputs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hidden: dict[str, str] = {}
        self.action: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "form":
            self.action = attributes.get("action")
        if tag == "input" and attributes.get("type") == "hidden" and attributes.get("name"):
            self.hidden[str(attributes["name"])] = attributes.get("value") or ""


def hidden_inputs(html: str) -> dict[str, str]:
    parser = _Inputs()
    parser.feed(html)
    return parser.hidden


def form_action(html: str) -> str | None:
    parser = _Inputs()
    parser.feed(html)
    return parser.action


def prepare_demo(settings: Settings, residents: int) -> dict[str, Any]:
    """Initialise a vault on `settings`, add the demo street and accounts; the credentials."""
    runtime = init_runtime(settings)
    try:
        with runtime.transaction() as session:
            populate(session, runtime.vault.store, residents)
        with runtime.transaction() as session:
            return dict(create_demo_accounts(session, runtime))
    finally:
        runtime.close()


@contextmanager
def serving(app: Any, port: int | None = None, **uvicorn_kwargs: Any) -> Iterator[int]:
    """Serve `app` with uvicorn in a thread of this process on a free (or the given) port;
    yields the port once the server is up, and stops it afterwards."""
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="error", lifespan="on", **uvicorn_kwargs
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        # The lifespan's shutdown signs a last checkpoint and closes the runtime's pools; on
        # a loaded machine that can take a while, and a database dropped before it finishes
        # leaves open connections behind (ResourceWarning in a later test).
        thread.join(timeout=90)


class LentRuntime:
    """A test's runtime lent to a CLI command, which closes what it opens: closing the
    loan leaves the runtime open for the test."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runtime, name)

    def close(self) -> None:
        pass


def run_cli(
    home: Path, database_url: str, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """`resident-vault ARGS` in a process of its own, as an operator runs it (English)."""
    environment = {
        **os.environ,
        "VAULT_HOME": str(home),
        "VAULT_DATABASE_URL": database_url,
        "VAULT_LANG": "en",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-c", "from api.cli.main import main; main()", "--log-console", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )


@contextmanager
def postgres_copy(prefix: str, postgres_template: str | None) -> Iterator[str]:
    """A fresh PostgreSQL database copied from the migrated template; dropped afterwards."""
    url = _require_postgres()
    assert postgres_template is not None
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(
            text(f'CREATE DATABASE "{name}" TEMPLATE "{make_url(postgres_template).database}"')
        )
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        collect_stray_connections()


def collect_stray_connections() -> None:
    """A connection a stopped test server never returned (a background task cancelled
    mid-query, a database killed under it) is garbage once its database is gone. Collect it
    there, where "deleted while still open" is expected, rather than in whichever later
    test the garbage collector happens to run (filterwarnings=error would fail that one)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@contextmanager
def run_demo_server(
    home: Path,
    database_url: str,
    residents: int = 80,
    engine: PolicyEngine | None = None,
    **configured: Any,
) -> Iterator[DemoServer]:
    """`configured`: settings as an operator would give them (VAULT_<NAME>)."""
    settings = Settings(
        **{
            "home": home,
            "database_url": database_url,
            "checkpoint_interval_seconds": 0.5,
            **configured,
        }
    )
    credentials = prepare_demo(settings, residents)
    app = create_app(settings, engine=engine)
    with serving(app) as port:
        yield DemoServer(f"http://127.0.0.1:{port}", credentials, settings, app)


def require_opa() -> str:
    """The real OPA binary (OPA_BIN), or skip; under CI=true its absence fails the run."""
    path = os.environ.get("OPA_BIN", "")
    if path and os.access(path, os.X_OK):
        return path
    if IN_CI:
        pytest.fail("CI=true but OPA_BIN is not set: run .ci/install-opa and export OPA_BIN")
    pytest.skip("OPA_BIN is not set")


_sidecar: dict[str, str] = {}
_sidecar_stack = contextlib.ExitStack()
atexit.register(_sidecar_stack.close)


def sidecar_engine() -> PolicyEngine:
    """A fresh engine on this test process's OPA sidecar, started once on the shipped
    bundle built by `opa build` with our revision: the production profile's engine."""
    if "url" not in _sidecar:
        opa = require_opa()
        work = Path(_sidecar_stack.enter_context(tempfile.TemporaryDirectory(prefix="rv-opa-")))
        bundle = load_bundle()
        archive = build_bundle(opa, bundle, work / "bundle.tar.gz")
        _sidecar["url"] = _sidecar_stack.enter_context(
            local_opa_server(opa, bundle=archive, log=work / "decisions.log")
        )
        _sidecar["revision"] = bundle.revision
    return CachedEngine(OpaServerEngine(_sidecar["url"], expected_revision=_sidecar["revision"]))


@contextmanager
def demo_server_on(
    backend: str,
    home: Path,
    postgres_template: str | None,
    residents: int = 80,
) -> Iterator[DemoServer]:
    """A demo server on the embedded defaults (SQLite, local keyring, embedded policy
    engine), or on the production profile: a fresh PostgreSQL database copied from the
    migrated template (dropped afterwards) and the real OPA server as its policy engine.
    The body of every HTTP module's fixture."""
    if backend == "sqlite":
        with run_demo_server(home / "home", f"sqlite:///{home / 'vault.db'}", residents) as demo:
            yield demo
        return
    with (
        postgres_copy("rv_http", postgres_template) as database,
        run_demo_server(home / "home", database, residents, sidecar_engine()) as demo,
    ):
        yield demo


ID_PATTERN = re.compile(r"^r_[0-9a-f]{16}$")


def demo_server_fixture(prefix: str, residents: int = 80) -> Any:
    """A module-scoped `server` fixture on SQLite and on PostgreSQL, for an HTTP module:

    server = demo_server_fixture("consent-demo", residents=60)
    """

    @pytest.fixture(scope="module", params=["sqlite", "postgresql"])
    def server(
        request: pytest.FixtureRequest,
        tmp_path_factory: pytest.TempPathFactory,
        postgres_template: str | None,
    ) -> Iterator[DemoServer]:
        home = tmp_path_factory.mktemp(prefix)
        with demo_server_on(request.param, home, postgres_template, residents) as demo:
            yield demo

    return server


class HoldsRuntime(Protocol):
    """A demo service as the helpers below need it: DemoServer, tests.route_walk.World."""

    @property
    def runtime(self) -> Runtime: ...


def residents_where(server: HoldsRuntime, **where: str) -> list[str]:
    """Active, real (not decoy) residents by place (`community_id=`, `grid_id=`, `id=` of
    the building), by vault id, straight from the database: the tests' ground truth."""
    with server.runtime.vault.sessions() as session:
        query = (
            select(Resident.id)
            .join(Household, Household.id == Resident.household_id)
            .join(Room, Room.id == Household.room_id)
            .join(Building, Building.id == Room.building_id)
            .where(Resident.status == "active", Resident.is_decoy.is_(False))
            .order_by(Resident.id)
        )
        for column, value in where.items():
            query = query.where(getattr(Building, column) == value)
        return list(session.scalars(query))


def residents_in(server: HoldsRuntime, community: str) -> list[str]:
    """Active, real (not decoy) residents of a community, by vault id: the ground truth."""
    return residents_where(server, community_id=community)


def call(
    server: DemoServer,
    method: str,
    path: str,
    token: str | None,
    purpose: str | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """One HTTP request as an integrator makes it: bearer token, Purpose header."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers.update(kwargs.pop("headers", {}))
    if purpose:
        headers["Purpose"] = purpose
    return httpx.request(method, f"{server.url}{path}", headers=headers, timeout=60, **kwargs)
