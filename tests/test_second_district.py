"""A second district, built from nothing with the commands alone, then asked over HTTP:
each organisation and person sees exactly what its mandate gives, and a mandate revoked
by the command is denied on the next request, on the embedded engine and on the OPA
server (issue 19). No code and no package data is edited for it."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from api.cli.main import app as cli
from api.http.app import create_app
from api.settings import Settings
from policies import CachedEngine, OpaServerEngine, PolicyEngine, build_bundle, load_bundle
from policies.opa_server import local_opa_server
from tests.demo_server import DemoServer, free_port, require_opa, serving
from tests.factories import person
from vault.models import Household, Resident, Room

STREETS = [("st_north", "北街道"), ("st_south", "南街道")]
COMMUNITIES = [("cm_n1", "北一社区", "st_north"), ("cm_n2", "北二社区", "st_north")]
COMMUNITIES += [("cm_s1", "南一社区", "st_south")]
GRIDS = [("gd_n1_a", "cm_n1"), ("gd_n1_b", "cm_n1"), ("gd_n2_a", "cm_n2"), ("gd_s1_a", "cm_s1")]
BUILDINGS = [(f"bd_{grid[3:]}", grid) for grid, _ in GRIDS]
WORKER_PASSWORD = "Grid-worker-2026-north"


class District:
    def __init__(self, home: Path, database_url: str) -> None:
        self.home, self.database_url = home, database_url

    def run(self, *args: str, stdin: str | None = None) -> str:
        variables = {
            "VAULT_HOME": str(self.home),
            "VAULT_DATABASE_URL": self.database_url,
            "VAULT_LANG": "en",
        }
        result = CliRunner().invoke(
            cli, ["--log-json", *args], env=variables, input=stdin, catch_exceptions=False
        )
        assert result.exit_code == 0, (args, result.output)
        return result.stdout


def _client(printed: str) -> tuple[str, str | None]:
    client_id = re.search(r"client_id: (\S+)", printed)
    secret = re.search(r"client_secret: (\S+)", printed)
    assert client_id is not None, printed
    return client_id.group(1), secret.group(1) if secret else None


def _residents_csv(path: Path) -> Path:
    """Three residents in each building, with their welfare status."""
    rows = []
    for index, (building, _) in enumerate(BUILDINGS):
        for n in range(3):
            row = {"building_id": building, "unit": "1", "room": f"{n + 1}01"}
            row |= person(100 + index * 10 + n)
            rows.append(row)
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


def build_district(district: District, port: int, tmp_path: Path) -> dict[str, Any]:
    """Everything from commands: places, organisations, a 低保 mandate, an account, clients,
    residents. Returns the credentials the commands printed."""
    run = district.run
    run("init")
    for street, name in STREETS:
        run("places", "add", "street", street, "--name", name)
    for community, name, street in COMMUNITIES:
        run("places", "add", "community", community, "--name", name, "--parent", street)
    for grid, community in GRIDS:
        run("places", "add", "grid", grid, "--name", grid, "--parent", community)
    for building, grid in BUILDINGS:
        run("places", "add", "building", building, "--name", building, "--parent", grid)
    places = [f"--place={community}" for community, _, _ in COMMUNITIES]
    run("orgs", "add", "org_north_ca", "--kind", "department", "--name", "北区民政局", *places)
    run(
        "orgs",
        "add",
        "org_rc_n1",
        "--kind",
        "residents_committee",
        "--name",
        "北一居委会",
        "--place",
        "cm_n1",
    )
    run(
        "orgs",
        "add",
        "org_north_pm",
        "--kind",
        "property_company",
        "--name",
        "北物业",
        "--building",
        "bd_n1_a",
        "--building",
        "bd_n1_b",
    )
    run(
        "mandates",
        "grant",
        "org_north_ca",
        "--purpose",
        "subsidy-review",
        "--action",
        "read,list",
        "--fields",
        "name,phone,low_income_status",
    )
    run(
        "accounts",
        "add",
        "gw.north",
        "--org",
        "org_rc_n1",
        "--role",
        "grid_worker",
        "--grid",
        "gd_n1_a",
        "--password-stdin",
        stdin=WORKER_PASSWORD + "\n",
    )
    department = _client(
        run(
            "clients",
            "add",
            "--organisation",
            "org_north_ca",
            "--scopes",
            "residents:read",
            "--purposes",
            "subsidy-review",
        )
    )
    property_company = _client(
        run(
            "clients",
            "add",
            "--organisation",
            "org_north_pm",
            "--scopes",
            "residents:read",
            "--purposes",
            "property-notice",
        )
    )
    redirect = f"http://127.0.0.1:{port}/portal/callback"
    pages = _client(
        run(
            "clients",
            "add",
            "--public",
            "--first-party",
            "--scopes",
            "me residents:read",
            "--redirect-uri",
            redirect,
        )
    )
    run("import", str(_residents_csv(tmp_path / "residents.csv")))
    return {
        "clients": [
            {
                "organisation": "org_north_ca",
                "client_id": department[0],
                "client_secret": department[1],
                "scopes": ["residents:read"],
            },
            {
                "organisation": "org_north_pm",
                "client_id": property_company[0],
                "client_secret": property_company[1],
                "scopes": ["residents:read"],
            },
        ],
        "public_clients": [{"client_id": pages[0], "redirect_uris": [redirect]}],
        "users": [],
    }


def _opa_engine(tmp_path: Path) -> Iterator[PolicyEngine]:
    opa = require_opa()
    archive = build_bundle(opa, load_bundle(), tmp_path / "bundle.tar.gz")
    with local_opa_server(opa, bundle=archive) as url:
        yield CachedEngine(OpaServerEngine(url, expected_revision=load_bundle().revision))


@contextmanager
def _engine(kind: str, tmp_path: Path) -> Iterator[PolicyEngine | None]:
    if kind == "embedded":
        yield None  # the service's default
        return
    yield from _opa_engine(tmp_path)


def _get(server: DemoServer, path: str, token: str, purpose: str, **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", "Purpose": purpose}
    return httpx.get(f"{server.url}{path}", headers=headers, params=params, timeout=30)


@pytest.mark.parametrize(
    ("engine_kind", "database_url"),
    [("embedded", "sqlite"), ("opa", "postgresql")],
    indirect=["database_url"],
)
def test_a_second_district_from_commands_sees_exactly_its_mandates(
    engine_kind: str, database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    district = District(tmp_path / "home", database_url)
    credentials = build_district(district, port, tmp_path)
    settings = Settings(home=district.home, database_url=database_url)
    with _engine(engine_kind, tmp_path) as engine:
        app = create_app(settings, engine=engine)
        with serving(app, port=port):
            server = DemoServer(f"http://127.0.0.1:{port}", credentials, settings, app)
            department = server.client_token("org_north_ca")
            listed = _get(server, "/v1/residents", department, "subsidy-review", limit=100)
            assert listed.status_code == 200, listed.text
            items = listed.json()["items"]
            assert len(items) == 3 * len(BUILDINGS)  # every community it serves
            for item in items:
                assert item["resident_id"].startswith("ps_")
                shown = {name for name, t in item["treatments"].items() if t != "denied"}
                assert shown == {"name", "phone", "low_income_status"}, shown
            revision = listed.headers["Policy-Revision"]
            assert re.fullmatch(r"rev-[0-9a-f]{16}\.d\d+", revision), revision
            # A purpose outside its mandate is refused.
            other = _get(server, "/v1/residents", department, "elderly-care-visit")
            assert other.status_code == 403, other.text

            # The grid worker sees their grid's building alone.
            worker = server.login("gw.north", WORKER_PASSWORD, "residents:read")["access_token"]
            mine = _get(server, "/v1/residents", worker, "grid-service", limit=100)
            assert mine.status_code == 200, mine.text
            with server.runtime.vault.sessions() as session:
                in_grid = set(
                    session.scalars(
                        select(Resident.id)
                        .join(Household, Household.id == Resident.household_id)
                        .join(Room, Room.id == Household.room_id)
                        .where(Room.building_id == "bd_n1_a")
                    )
                )
            assert {i["resident_id"] for i in mine.json()["items"]} == in_grid

            # The property company sees nobody: nobody consented to its notices.
            company = server.client_token("org_north_pm")
            none = _get(server, "/v1/residents", company, "property-notice", limit=100)
            assert none.status_code == 200, none.text
            assert none.json()["items"] == []
            assert none.json()["left_out"] == 6

            # Revoked by the command: denied on the very next request.
            district.run("mandates", "revoke", "org_north_ca", "--purpose", "subsidy-review")
            denied = _get(server, "/v1/residents", department, "subsidy-review")
            assert denied.status_code == 403, denied.text
            assert denied.headers["Policy-Revision"] != revision
