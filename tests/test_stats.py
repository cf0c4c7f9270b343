"""Statistics without row access: attacks on the published numbers, and the budget.

The HTTP tests run a real demo server and attack it as a department would: subtracting
what one query publishes from another (a community total minus the visible grid cells,
all three levels together, solved as a linear programme), spending the privacy budget
until it is refused, planting decoys, asking for a denied field or outside a mandate.
The property tests generate random place trees and check that no suppressed cell is
determined by the published ones.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from access.settings import StatsSettings
from access.stats import measures
from access.stats.disclosure import Cell, Place, Table, determined, suppress
from access.stats.measures import MEASURES, TOTAL, Measure, Unit
from access.stats.service import BY_LEVELS, StatsService, period_of
from access.stats.tables import LEVELS
from audit.models import AuditEntry
from tests.demo_server import DemoServer, demo_server_fixture
from vault.models import Building, Household, Resident, Room
from vault.services import NewResident, Provenance
from vault.synthetic import make_household

PURPOSE = "community-statistics"
SUPPRESSED_MEASURES = ("disability", "low-income-households", "subsidy-amount", "age-bands")


server = demo_server_fixture("stats-demo", residents=160)


def stats(
    server: DemoServer,
    token: str | None,
    measure: str,
    purpose: str | None = PURPOSE,
    lang: str | None = None,
    **params: Any,
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if purpose:
        headers["Purpose"] = purpose
    if lang:
        headers["Accept-Language"] = lang
    return httpx.get(f"{server.url}/v1/stats/{measure}", headers=headers, params=params, timeout=60)


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["type"].endswith(f"/problems/{slug}")
    return body


def entry(server: DemoServer, decision_id: str) -> AuditEntry:
    with server.runtime.vault.sessions() as session:
        found = list(
            session.scalars(select(AuditEntry).where(AuditEntry.decision_id == decision_id))
        )
    assert len(found) == 1
    return found[0]


def truth(server: DemoServer, **where: str) -> int:
    """Real residents by place, from the database (the test's ground truth)."""
    with server.runtime.vault.sessions() as session:
        query = (
            select(func.count(Resident.id))
            .join(Household, Household.id == Resident.household_id)
            .join(Room, Room.id == Household.room_id)
            .join(Building, Building.id == Room.building_id)
            .where(Resident.status == "active", Resident.is_decoy.is_(False))
        )
        for column, value in where.items():
            query = query.where(getattr(Building, column) == value)
        return int(session.scalar(query) or 0)


# -- the linear-programming attacker --------------------------------------------------------


def intervals(
    places: Sequence[Place], categories: Sequence[str], published: dict[Cell, int | None]
) -> dict[Cell, tuple[float, float]]:
    """For each suppressed cell, the least and greatest value consistent with everything
    published, the table's sums and non-negativity (scipy's linear programming)."""
    linprog = pytest.importorskip("scipy.optimize").linprog
    table = Table(places, categories)
    cells = table.cells()
    index = {c: i for i, c in enumerate(cells)}
    rows: list[list[float]] = []
    for whole, parts in table.relations():
        row = [0.0] * len(cells)
        row[index[whole]] = -1.0
        for part in parts:
            row[index[part]] += 1.0
        rows.append(row)
    bounds = [
        (float(v), float(v)) if (v := published.get(c)) is not None else (0.0, None) for c in cells
    ]
    found: dict[Cell, tuple[float, float]] = {}
    for cell in cells:
        if published.get(cell) is not None:
            continue
        objective = [0.0] * len(cells)
        objective[index[cell]] = 1.0
        low = linprog(objective, A_eq=rows, b_eq=[0.0] * len(rows), bounds=bounds)
        objective[index[cell]] = -1.0
        high = linprog(objective, A_eq=rows, b_eq=[0.0] * len(rows), bounds=bounds)
        assert low.status == 0
        found[cell] = (low.fun, float("inf") if high.status == 3 else -high.fun)
    return found


# -- property tests: random tables ------------------------------------------------------------


@st.composite
def tables(draw: st.DrawFn) -> Table:
    places = [Place("all", "jurisdiction", None)]
    for c in range(draw(st.integers(1, 3))):
        places.append(Place(f"c{c}", "community", "all"))
        for g in range(draw(st.integers(1, 3))):
            places.append(Place(f"c{c}g{g}", "grid", f"c{c}"))
            for b in range(draw(st.integers(1, 4))):
                places.append(Place(f"c{c}g{g}b{b}", "building", f"c{c}g{g}"))
    ordered = sorted(
        places,
        key=lambda p: (
            ("jurisdiction", "community", "grid").index(p.level) if p.level != "building" else 3
        ),
    )
    categories = draw(st.sampled_from([(TOTAL,), ("a", "b", TOTAL), ("a", "b", "c", TOTAL)]))
    parts = [c for c in categories if c != TOTAL] or [TOTAL]
    small = st.one_of(st.integers(0, 4), st.integers(0, 30))
    leaves = {(p.id, c): draw(small) for p in ordered if p.level == "building" for c in parts}
    return Table(ordered, categories, leaves).rolled_up()


def published_of(table: Table, hidden: set[Cell]) -> dict[Cell, int | None]:
    return {c: (None if c in hidden else table.values[c]) for c in table.cells()}


@settings(max_examples=150, deadline=None)
@given(tables(), st.integers(2, 6))
def test_every_relation_has_zero_or_at_least_two_suppressed_cells(table: Table, k: int) -> None:
    hidden = suppress(table, k)
    for cell in table.cells():
        if 0 < table.values[cell] < k:
            assert cell in hidden, "a small cell was published"
    for whole, parts in table.relations():
        assert len(hidden & {whole, *parts}) != 1, (whole, "one suppressed cell is recoverable")
    assert not determined(table.relations(), hidden)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables(), st.integers(3, 6))
def test_no_suppressed_cell_is_pinned_by_linear_programming(table: Table, k: int) -> None:
    """The attacker solves min and max of each suppressed cell subject to every published
    number, every sum and non-negativity: the interval never closes on one value."""
    hidden = suppress(table, k)
    for cell, (low, high) in intervals(
        table.places, table.categories, published_of(table, hidden)
    ).items():
        # A zero chosen as a complement can be pinned at 0 by non-negativity; that says
        # "nobody" of a cell that could have been published. No cell counting people is.
        if table.values[cell] > 0:
            assert high - low > 1e-6, (cell, table.values[cell], low, high)


def test_a_bridge_between_two_protected_blocks_is_caught() -> None:
    """Two rectangles of suppressed cells joined by one cell: every row and column has two
    suppressed cells, yet the joining cell is solved. The rank check finds and fixes it."""
    places = [Place("all", "jurisdiction", None)] + [
        Place(f"b{i}", "building", "all") for i in range(4)
    ]
    table = Table(places, ("a", "b", "c", "d", TOTAL))
    # Blocks {b0,b1}x{a,b} and {b2,b3}x{c,d}; the bridge b1:c links them.
    pattern = {
        ("b0", "a"),
        ("b0", "b"),
        ("b1", "a"),
        ("b1", "b"),
        ("b2", "c"),
        ("b2", "d"),
        ("b3", "c"),
        ("b3", "d"),
        ("b1", "c"),
        ("b2", "b"),
    }
    assert determined(table.relations(), pattern) == set()  # b2:b closes a cycle: safe
    bridge = pattern - {("b2", "b")}
    assert ("b1", "c") in determined(table.relations(), bridge)


def test_fixed_totals_keep_the_state_the_residents_table_gave_them() -> None:
    places = [
        Place("all", "jurisdiction", None),
        Place("b0", "building", "all"),
        Place("b1", "building", "all"),
    ]
    table = Table(
        places, ("a", "b", TOTAL), {("b0", "a"): 2, ("b0", "b"): 9, ("b1", "a"): 8, ("b1", "b"): 7}
    ).rolled_up()
    fixed = {("b0", TOTAL): False, ("b1", TOTAL): False, ("all", TOTAL): False}
    hidden = suppress(table, 5, fixed=fixed)
    assert not hidden & set(fixed)
    assert {("b0", "a"), ("b0", "b")} <= hidden  # the total is public, so a partner hides
    assert not determined(table.relations(), hidden)


def test_attribute_cells_where_almost_everyone_has_it_are_suppressed() -> None:
    places = [
        Place("all", "jurisdiction", None),
        Place("b0", "building", "all"),
        Place("b1", "building", "all"),
        Place("b2", "building", "all"),
    ]
    table = Table(
        places, (TOTAL,), {("b0", TOTAL): 9, ("b1", TOTAL): 20, ("b2", TOTAL): 30}
    ).rolled_up()
    population = {"all": 80, "b0": 10, "b1": 40, "b2": 30}
    hidden = suppress(table, 5, population=population)
    assert ("b0", TOTAL) in hidden  # 9 of 10: the tenth is the only one without it
    assert ("b2", TOTAL) in hidden  # all 30 have it
    assert ("b1", TOTAL) not in hidden


def test_age_bands_come_from_the_catalogue_rule() -> None:
    from vault.catalogue import default_catalogue

    spec = default_catalogue()["birth_date"]
    today = datetime(2026, 12, 2, tzinfo=UTC).date()
    classify = MEASURES["age-bands"].classify
    assert classify(spec, "1930-05-01", today) == ("90+", 1)
    assert classify(spec, "2020-01-01", today) == ("0-9", 1)
    assert classify(spec, None, today) == ("unknown", 1)
    assert MEASURES["low-income-households"].classify(None, "dibao_edge", today) is None
    assert measures.yuan("1234.50") == 1235
    assert measures.yuan("garbage") == 0


def test_the_budget_period_is_the_calendar_month_in_china() -> None:
    label, start, end = period_of(datetime(2026, 12, 31, 17, 0, tzinfo=UTC))
    assert label == "2027-01"  # 01:00 on 1 January in Beijing
    assert start == datetime(2026, 12, 31, 16, 0, tzinfo=UTC)
    assert end == datetime(2027, 1, 31, 16, 0, tzinfo=UTC)


# -- HTTP: what a department sees ----------------------------------------------------------


def test_residents_by_building_match_the_vault_and_totals_add_up(server: DemoServer) -> None:
    token = server.client_token("org_civil_affairs")
    response = stats(server, token, "residents", by="building")
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["Decision-Id"].startswith("dec_")
    assert body["unit"] == "residents"
    assert body["label"] == "常住居民人数"
    for cell in body["cells"]:
        value = cell["values"]["total"]
        assert value is None or value == truth(server, id=cell["id"])
    jurisdiction = next(t for t in body["totals"] if t["level"] == "jurisdiction")
    assert jurisdiction["values"]["total"] == truth(server)
    assert body["disclosure"]["method"] == "suppression"
    assert body["disclosure"]["threshold"] == 5
    english = stats(server, token, "residents", by="grid", lang="en").json()
    assert english["label"] == "Residents"


def test_age_band_totals_are_published_exactly_as_the_residents_measure_publishes_them(
    server: DemoServer,
) -> None:
    token = server.client_token("org_civil_affairs")
    for by in BY_LEVELS:
        residents = stats(server, token, "residents", by=by).json()
        bands = stats(server, token, "age-bands", by=by).json()
        people = {p["id"]: p["values"]["total"] for p in residents["cells"] + residents["totals"]}
        for place in bands["cells"] + bands["totals"]:
            assert place["values"]["total"] == people[place["id"]]


def test_differencing_attack_across_levels_recovers_no_suppressed_cell(
    server: DemoServer,
) -> None:
    """The attack of issue 7: subtract what one query publishes from another. Query every
    level, merge what they publish, and (1) subtract visible children from each published
    parent, (2) solve the whole system as a linear programme."""
    token = server.client_token("org_civil_affairs")
    attacked = 0
    for name in SUPPRESSED_MEASURES:
        published: dict[Cell, int | None] = {}
        places: dict[str, Place] = {}
        categories: list[str] = []
        for by in BY_LEVELS:
            body = stats(server, token, name, by=by).json()
            categories = body["categories"]
            for item in body["cells"] + body["totals"]:
                places[item["id"]] = Place(item["id"], item["level"], item["parent"])
                for category, value in item["values"].items():
                    cell = (item["id"], category)
                    # The same cell is published alike by every level's query.
                    assert published.get(cell, value) == value, (name, cell)
                    published[cell] = value
        ordered = sorted(places.values(), key=lambda p: LEVELS.index(p.level))
        table = Table(ordered, categories)
        hidden = {c for c, v in published.items() if v is None}
        attacked += len(hidden)
        for whole, parts in table.relations():
            unknown = [c for c in (whole, *parts) if published[c] is None]
            assert len(unknown) != 1, (name, whole, "recovered by subtraction")
        for cell, (low, high) in intervals(ordered, categories, published).items():
            assert high - low > 1e-6 or high < 0.5, (name, cell, low, high)
    assert attacked > 0, "the demo street should have small cells to attack"


def test_no_published_cell_counts_fewer_than_k_people(server: DemoServer) -> None:
    token = server.client_token("org_civil_affairs")
    for name in MEASURES:
        for by in BY_LEVELS:
            body = stats(server, token, name, by=by).json()
            if name == "subsidy-amount":
                continue  # yuan, not people: suppressed as its recipients' counts are
            for cell in body["cells"] + body["totals"]:
                for value in cell["values"].values():
                    assert value is None or not 0 < value < 5, (name, by, cell)


def test_decoys_are_never_counted(server: DemoServer) -> None:
    token = server.client_token("org_civil_affairs")
    before = {m: stats(server, token, m, by="building").json() for m in MEASURES}
    rng = random.Random(7)
    store = server.runtime.vault.store
    with server.runtime.transaction() as session:
        household = session.scalars(
            select(Household.id)
            .join(Room, Room.id == Household.room_id)
            .where(Room.building_id == "bd_xf_01")
            .limit(1)
        ).one()
        decoys = []
        for person in make_household(rng, address="示范区示范街道幸福社区1号楼", size_hint=6):
            person.update(
                elderly_living_alone=True,
                low_income_status="dibao",
                subsidy_amount="900.00",
                disability={"category": "visual", "grade": 2},
            )
            # As fingerprinted exports plant them (access/exports/decoys.py).
            decoys.append(NewResident(person, household, is_decoy=True))
        store.create_many(session, decoys, Provenance(actor="test", channel="test"))
    for name, earlier in before.items():
        after = stats(server, token, name, by="building").json()
        assert after["cells"] == earlier["cells"], name
        assert after["totals"] == earlier["totals"], name


# -- HTTP: refusals --------------------------------------------------------------------------


def test_checks_run_in_the_contract_order(server: DemoServer) -> None:
    token = server.client_token("org_civil_affairs")
    assert_problem(stats(server, None, "residents"), 401, "invalid-token")
    reader = server.client_token("org_civil_affairs", scope="residents:read")
    assert_problem(stats(server, reader, "residents"), 403, "insufficient-scope")
    assert_problem(stats(server, token, "residents", purpose=None), 400, "purpose-required")
    assert_problem(stats(server, token, "residents", purpose="no-such"), 422, "unknown-purpose")
    # A purpose of theirs, but not one for statistics.
    assert_problem(
        stats(server, token, "residents", purpose="subsidy-review"), 403, "policy-denied"
    )
    body = assert_problem(stats(server, token, "residents", by="room"), 422, "validation-error")
    assert body["errors"][0]["field"] == "by"
    assert_problem(stats(server, token, "no-such-measure"), 404, "not-found")


def test_a_department_outside_the_mandate_is_refused_and_recorded(server: DemoServer) -> None:
    token = server.client_token("org_public_security")
    response = stats(server, token, "residents", lang="en")
    body = assert_problem(response, 403, "policy-denied")
    assert body["title"] == "Denied by policy"
    recorded = entry(server, response.headers["Decision-Id"])
    assert recorded.outcome == "denied"
    assert recorded.action == "stats"
    assert recorded.organisation == "org_public_security"


def test_a_measure_whose_field_the_purpose_denies_is_refused(
    server: DemoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Religion is denied for community statistics: a measure over it is refused, not
    answered with every cell suppressed."""
    believers = Measure(
        "religious-believers",
        "信教人数",
        "Religious believers",
        "religion",
        Unit.RESIDENTS,
        lambda _s, v, _t: (TOTAL, 1) if v != "none" else None,
    )
    monkeypatch.setitem(MEASURES, believers.name, believers)
    token = server.client_token("org_civil_affairs")
    response = stats(server, token, "religious-believers")
    body = assert_problem(response, 403, "policy-denied")
    assert "religion" in body["detail"]
    assert entry(server, response.headers["Decision-Id"]).outcome == "denied"


# -- HTTP: audit and differential privacy -------------------------------------------------


def test_every_query_is_audited_with_its_cells_suppressions_and_epsilon(
    server: DemoServer,
) -> None:
    token = server.client_token("org_civil_affairs")
    plain = stats(server, token, "disability", by="grid")
    body = plain.json()
    recorded = entry(server, plain.headers["Decision-Id"])
    assert recorded.action == "stats"
    assert recorded.outcome == "allowed"
    assert recorded.purpose == PURPOSE
    assert recorded.resident_id is None
    assert recorded.fields == {"disability": "generalised"}
    assert recorded.details["measure"] == "disability"
    assert recorded.details["by"] == "grid"
    assert recorded.details["epsilon"] == 0.0
    assert recorded.details["suppressed"] == body["disclosure"]["suppressed"]
    assert recorded.details["cells"] == len(body["cells"]) + len(body["totals"])

    noisy = stats(server, token, "elderly-living-alone", by="grid", dp="true", epsilon=0.25)
    assert noisy.status_code == 200, noisy.text
    answer = noisy.json()
    recorded = entry(server, noisy.headers["Decision-Id"])
    assert recorded.details["epsilon"] == pytest.approx(answer["disclosure"]["epsilon"])
    assert recorded.details["epsilon"] == pytest.approx(0.25)
    assert recorded.details["mechanism"] == "laplace"
    # Only counts and names are recorded: no value of any resident.
    assert set(recorded.details) == {
        "measure",
        "by",
        "cells",
        "suppressed",
        "epsilon",
        "delta",
        "mechanism",
        "period",
    }
    assert "dibao" not in json.dumps(recorded.details)


def test_noisy_answers_are_consistent_and_charged_to_the_budget(server: DemoServer) -> None:
    token = server.client_token("org_civil_affairs")
    before = httpx.get(
        f"{server.url}/v1/stats/budget", headers={"Authorization": f"Bearer {token}"}
    ).json()
    response = stats(server, token, "age-bands", by="building", noise="gaussian", epsilon=0.5)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["disclosure"]["mechanism"] == "gaussian"
    assert body["disclosure"]["delta"] == pytest.approx(1e-6)
    parts = [c for c in body["categories"] if c != TOTAL]
    for cell in body["cells"]:
        values = cell["values"]
        assert all(isinstance(values[c], int) and values[c] >= 0 for c in parts)
        assert values[TOTAL] == sum(values[c] for c in parts)
    grids = {t["id"]: t for t in body["totals"] if t["level"] == "grid"}
    for grid_id, grid in grids.items():
        children = [c for c in body["cells"] if c["parent"] == grid_id]
        assert grid["values"][TOTAL] == sum(c["values"][TOTAL] for c in children)
    assert body["budget"]["epsilon_spent"] == pytest.approx(before["epsilon_spent"] + 0.5)


def test_budget_exhaustion_refuses_further_noisy_queries(server: DemoServer) -> None:
    """org_health spends its month's epsilon (3.0, at most 1.0 a query) and is refused;
    suppressed (non-noisy) statistics still work."""
    token = server.client_token("org_health")
    for _ in range(3):
        response = stats(server, token, "disability", by="community", dp="true", epsilon=1.0)
        assert response.status_code == 200, response.text
    assert response.json()["budget"]["epsilon_remaining"] == pytest.approx(0.0, abs=1e-6)
    refused = stats(server, token, "disability", by="community", dp="true", epsilon=0.1)
    body = assert_problem(refused, 429, "budget-exhausted")
    assert int(refused.headers["Retry-After"]) > 0
    _, _, end = period_of(datetime.now(UTC))
    assert body["budget"]["renews_at"] == end.isoformat()
    assert "恢复" in body["detail"]
    english = stats(server, token, "residents", lang="en", dp="true", epsilon=0.1)
    assert "renews" in assert_problem(english, 429, "budget-exhausted")["detail"]
    assert entry(server, refused.headers["Decision-Id"]).reason == "budget-exhausted"
    assert stats(server, token, "disability", by="community").status_code == 200
    too_much = stats(
        server, server.client_token("org_civil_affairs"), "residents", dp="true", epsilon=5
    )
    assert_problem(too_much, 422, "validation-error")
    # The ledger is the log: a fresh service over the same database agrees.
    with server.runtime.vault.sessions() as session:
        spent = sum(
            float(d.get("epsilon") or 0)
            for d in session.scalars(
                select(AuditEntry.details).where(
                    AuditEntry.action == "stats",
                    AuditEntry.organisation == "org_health",
                    AuditEntry.outcome == "allowed",
                )
            )
        )
    assert spent == pytest.approx(3.0)
    fresh = StatsService(server.app.state.gate, StatsSettings())
    budget_now = httpx.get(
        f"{server.url}/v1/stats/budget", headers={"Authorization": f"Bearer {token}"}
    ).json()
    assert budget_now["epsilon_remaining"] == pytest.approx(0.0, abs=1e-6)
    assert fresh.settings.epsilon_per_month == 3.0


def test_measures_are_listed(server: DemoServer) -> None:
    token = server.client_token("org_civil_affairs")
    listed = httpx.get(f"{server.url}/v1/stats", headers={"Authorization": f"Bearer {token}"})
    names = {m["measure"] for m in listed.json()["items"]}
    assert {
        "residents",
        "elderly-living-alone",
        "low-income-households",
        "disability",
        "subsidy-amount",
        "age-bands",
    } <= names
