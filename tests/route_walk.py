"""One demo service in-process, with a signed-in caller of every kind, for tests that walk
every route of the OpenAPI document and every page route (tests/test_bounds.py,
tests/test_reads_audited.py).

The service runs on the embedded defaults at https://testserver, so the pages' sign-in works
inside a TestClient; API calls carry bearer tokens from the same OAuth server.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from access.runtime import Runtime
from api.http.app import create_app
from api.pages.core import PageRoute
from audit.models import AuditEntry
from tests.browser.server import prepare, sign_in

ORIGIN = "https://testserver"
# Resident ids and pseudonyms as any answer would carry them (vault.models.new_id, ps_...).
RESIDENT_ID = re.compile(r"\b(r_[0-9a-f]{16}|ps_[0-9a-z]{10,})\b")
AREA_OF_ROLE = {
    "resident": "portal",
    "grid_worker": "desk",
    "community_worker": "desk",
    "auditor": "console",
    "operator": "operator",
}


@dataclass
class World:
    client: TestClient
    cast: dict[str, Any]
    bearers: dict[str, str] = field(default_factory=dict)  # role or org -> access token

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.client.app.state.runtime  # type: ignore[attr-defined]
        return runtime

    def user(self, role: str, **match: Any) -> dict[str, Any]:
        return next(
            u
            for u in self.cast["users"]
            if u["role"] == role and all(u.get(k) == v for k, v in match.items())
        )

    def sign_in(self, role: str, **match: Any) -> dict[str, Any]:
        """Sign the TestClient in to the role's page area; returns the person."""
        person = self.user(role, **match)
        self.client.cookies.clear()
        landed = sign_in(self.client, AREA_OF_ROLE[role], person["username"], person["password"])
        assert landed.status_code == 200, landed.text[:300]
        return person

    def page_bearer(self) -> str:
        store = self.client.app.state.page_sessions  # type: ignore[attr-defined]
        token: str = store.get(self.client.cookies.get("__Host-rv_pages")).access_token
        return token

    def client_token(self, organisation: str) -> str:
        app_client = next(c for c in self.cast["clients"] if c["organisation"] == organisation)
        response = self.client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "scope": " ".join(app_client["scopes"])},
            auth=(app_client["client_id"], app_client["client_secret"]),
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def bearer_for(self, scopes: list[str]) -> str | None:
        """A token of the cast that holds every scope (people first, then clients)."""
        for token in self.bearers.values():
            claims = json.loads(_b64(token.split(".")[1]))
            if set(scopes) <= set(str(claims.get("scope", "")).split()):
                return token
        return None

    def call(
        self,
        method: str,
        path: str,
        bearer: str | None,
        purpose: str | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        if purpose:
            headers["Purpose"] = purpose
        headers.update(kwargs.pop("headers", {}))
        return self.client.request(method, path, headers=headers, **kwargs)

    def entries_of(self, request_id: str) -> list[AuditEntry]:
        with self.runtime.vault.sessions() as session:
            return list(
                session.scalars(select(AuditEntry).where(AuditEntry.request_id == request_id))
            )

    def entries_count(self) -> int:
        with self.runtime.vault.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(AuditEntry)) or 0)


def world_fixture() -> Any:
    """A module-scoped `world` fixture: `world = world_fixture()` in a test module."""

    @pytest.fixture(scope="module")
    def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
        home: Path = tmp_path_factory.mktemp("walk")
        settings, cast = prepare(home / "home", f"sqlite:///{home / 'vault.db'}", ORIGIN)
        app = create_app(settings)
        with TestClient(app, base_url=ORIGIN) as client:
            found = World(client, cast)
            for role in ("resident", "grid_worker", "community_worker", "auditor", "operator"):
                match = {"username": "resident.guardian"} if role == "resident" else {}
                found.sign_in(role, **match)
                found.bearers[role] = found.page_bearer()
            found.client.cookies.clear()
            for app_client in cast["clients"]:
                found.bearers[app_client["organisation"]] = found.client_token(
                    app_client["organisation"]
                )
            yield found

    return world


def operations(world: World) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path template, operation) of every operation the OpenAPI document names."""
    document = world.client.get("/openapi.json").json()
    return [
        (method.upper(), path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]


def _flattened(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(full path, route) of every route, through included routers (FastAPI >= 0.16x keeps
    an included router whole instead of copying its routes into the app)."""
    for route in routes:
        original = getattr(route, "original_router", None)
        if original is not None:
            yield from _flattened(original.routes, prefix + route.include_context.prefix)
        else:
            yield prefix + getattr(route, "path", ""), route


def page_routes(world: World) -> list[tuple[str, str]]:
    """(method, path template) of every page route (portal, desk, console, sign-in)."""
    app = world.client.app
    return sorted(
        (method, path)
        for path, route in _flattened(app.routes)  # type: ignore[attr-defined]
        if isinstance(route, PageRoute)
        for method in sorted(route.methods or ())
        if method != "HEAD"
    )


def api_routes(world: World) -> list[tuple[str, APIRoute]]:
    """(full path, route) of every API route (not a page)."""
    app = world.client.app
    return [
        (path, route)
        for path, route in _flattened(app.routes)  # type: ignore[attr-defined]
        if isinstance(route, APIRoute) and not isinstance(route, PageRoute)
    ]


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def residents_named(response: httpx.Response) -> set[str]:
    """Every resident id or pseudonym an answer carries, in JSON, text, CSV, HTML, or inside
    a compact JWS (consent receipts) whose payload is base64url JSON."""
    text = response.text
    found = set(RESIDENT_ID.findall(text))
    for token in re.findall(r"\b[\w-]+\.([\w-]+)\.[\w-]+\b", text):
        try:
            found |= set(RESIDENT_ID.findall(json.dumps(json.loads(_b64(token)))))
        except (ValueError, UnicodeDecodeError):
            continue
    return found
