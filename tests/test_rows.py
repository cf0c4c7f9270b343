"""Properties of the row compiler (`policies.rows`) on the real schema.

Random places (communities, their grids, the grids' buildings) and random residents in
them (or homeless, erased, decoys) are written to a migrated vault; for random row
constraints, the SQL the compiler gives selects exactly the residents a plain reading of
the constraints in Python selects. Each example writes in one transaction and rolls it
back, so the examples share the vault and never see each other's rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from policies.inputs import decision_input, recorded_input
from policies.interfaces import RowConstraints, RowScope
from policies.rows import (
    building_filter,
    by_area,
    place_filter,
    row_filter,
    rows_document,
    with_building,
)
from tests.factories import household
from vault.context import Vault
from vault.models import Building, Community, Grid, Resident, Street

EXAMPLES = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
NOWHERE = ("cm_elsewhere", "gd_elsewhere", "bd_elsewhere", "rs_nobody")


@dataclass(frozen=True)
class Home:
    building: str
    grid: str
    community: str


@dataclass(frozen=True)
class Person:
    id: str
    home: Home | None  # None: no household at all
    status: str  # active | erased
    decoy: bool


@dataclass(frozen=True)
class Town:
    homes: tuple[Home, ...]  # one per building
    people: tuple[Person, ...]

    @property
    def communities(self) -> list[str]:
        return sorted({h.community for h in self.homes})

    @property
    def grids(self) -> list[str]:
        return sorted({h.grid for h in self.homes})

    @property
    def buildings(self) -> list[str]:
        return [h.building for h in self.homes]


@dataclass(frozen=True)
class Case:
    town: Town
    rows: RowConstraints
    resident_id: str | None
    children: tuple[str, ...]


@st.composite
def towns(draw: st.DrawFn) -> Town:
    homes: list[Home] = []
    for c in range(draw(st.integers(1, 3))):
        for g in range(draw(st.integers(1, 2))):
            for b in range(draw(st.integers(1, 2))):
                homes.append(Home(f"bd_{c}{g}{b}", f"gd_{c}{g}", f"cm_{c}"))
    people = draw(
        st.lists(
            st.tuples(
                st.sampled_from(homes) | st.none(),
                st.sampled_from(["active", "active", "erased"]),
                st.booleans(),
            ),
            max_size=14,
        )
    )
    return Town(
        tuple(homes),
        tuple(
            Person(f"rs_{i:02d}", home, status, decoy)
            for i, (home, status, decoy) in enumerate(people)
        ),
    )


def _some(ids: Sequence[str], stranger: str) -> st.SearchStrategy[tuple[str, ...]]:
    """A few of `ids`, now and then with one that is nowhere in the town."""
    return st.lists(st.sampled_from([*ids, stranger]), unique=True, max_size=3).map(tuple)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    town = draw(towns())
    ids = [p.id for p in town.people]
    rows = RowConstraints(
        scope=draw(st.sampled_from(list(RowScope))),
        communities=draw(_some(town.communities, NOWHERE[0])),
        grids=draw(_some(town.grids, NOWHERE[1])),
        buildings=draw(_some(town.buildings, NOWHERE[2])),
        consent_required=draw(st.booleans()),
        legal_basis=draw(st.sampled_from(["statutory-duty", "consent", "self", None])),
    )
    resident_id = draw(st.sampled_from([*ids, NOWHERE[3]]) | st.none())
    children = draw(_some(ids, NOWHERE[3]))
    return Case(town, rows, resident_id, children)


def _build(session: Session, town: Town) -> None:
    """The town in the vault's own tables, parents flushed first (foreign keys)."""
    session.add(Street(id="st_rows", name="测试街道", district="测试区"))
    session.flush()
    for community in town.communities:
        session.add(Community(id=community, street_id="st_rows", name=f"社区{community}"))
    session.flush()
    for home in {(h.grid, h.community) for h in town.homes}:
        session.add(Grid(id=home[0], community_id=home[1], name=f"网格{home[0]}"))
    session.flush()
    buildings = {}
    for home in town.homes:
        buildings[home.building] = Building(
            id=home.building, community_id=home.community, grid_id=home.grid, name=home.building
        )
        session.add(buildings[home.building])
    session.flush()
    for person in town.people:
        household_id = None
        if person.home is not None:
            household_id = household(session, buildings[person.home.building], person.id[3:]).id
        session.add(
            Resident(
                id=person.id, household_id=household_id, status=person.status, is_decoy=person.decoy
            )
        )
    session.flush()


def _plainly(case: Case) -> set[str]:
    """The residents the constraints cover, read in plain Python: active ones with a
    home, decoys included (excluding them is the caller's part)."""
    rows = case.rows
    chosen: set[str] = set()
    for person in case.town.people:
        home = person.home
        if person.status != "active" or home is None:
            continue
        if (
            rows.scope == "all"
            or (rows.scope == "self" and person.id == case.resident_id)
            or (rows.scope == "children" and person.id in case.children)
            or (
                rows.scope == "jurisdiction"
                and (
                    home.community in rows.communities
                    or home.grid in rows.grids
                    or home.building in rows.buildings
                )
            )
        ):
            chosen.add(person.id)
    return chosen


def _selected(session: Session, case: Case, *, decoys: bool | None = None) -> set[str]:
    query = with_building(select(Resident.id)).where(
        row_filter(case.rows, resident_id=case.resident_id, children=case.children)
    )
    if decoys is not None:
        query = query.where(Resident.is_decoy.is_(decoys))
    found = list(session.scalars(query))
    assert len(found) == len(set(found)), "one row per resident"
    return set(found)


@EXAMPLES
@given(case=cases())
def test_the_filter_selects_what_the_constraints_say(vault: Vault, case: Case) -> None:
    decoys = {p.id for p in case.town.people if p.decoy}
    with vault.sessions() as session:
        try:
            _build(session, case.town)
            expected = _plainly(case)
            assert _selected(session, case) == expected
            assert _selected(session, case, decoys=False) == expected - decoys
            assert _selected(session, case, decoys=True) == expected & decoys
        finally:
            session.rollback()


@EXAMPLES
@given(case=cases())
def test_the_buildings_reached_are_the_jurisdictions(vault: Vault, case: Case) -> None:
    rows = case.rows
    where = building_filter(rows)
    named = rows.communities or rows.grids or rows.buildings
    assert (where is None) == (not by_area(rows) or (rows.scope == "jurisdiction" and not named))
    if where is None:
        return
    expected = {
        h.building
        for h in case.town.homes
        if rows.scope == "all"
        or h.community in rows.communities
        or h.grid in rows.grids
        or h.building in rows.buildings
    }
    with vault.sessions() as session:
        try:
            _build(session, case.town)
            assert set(session.scalars(select(Building.id).where(where))) == expected
        finally:
            session.rollback()


@EXAMPLES
@given(case=cases(), data=st.data())
def test_a_place_narrows_the_rows_and_never_widens_them(
    vault: Vault, case: Case, data: st.DataObject
) -> None:
    community = data.draw(st.sampled_from([None, *case.town.communities, "cm_elsewhere"]))
    grid = data.draw(st.sampled_from([None, *case.town.grids]))
    building = data.draw(st.sampled_from([None, *case.town.buildings]))
    at = {
        p.id
        for p in case.town.people
        if p.home is not None
        and all(
            want is None or have == want
            for have, want in (
                (p.home.community, community),
                (p.home.grid, grid),
                (p.home.building, building),
            )
        )
    }
    query = with_building(select(Resident.id)).where(
        row_filter(case.rows, resident_id=case.resident_id, children=case.children),
        place_filter(community=community, grid=grid, building=building),
    )
    with vault.sessions() as session:
        try:
            _build(session, case.town)
            assert set(session.scalars(query)) == _plainly(case) & at
        finally:
            session.rollback()


@given(case=cases())
@settings(max_examples=60, deadline=None)
def test_every_id_is_a_bound_parameter(case: Case) -> None:
    query = with_building(select(Resident.id)).where(
        row_filter(case.rows, resident_id=case.resident_id, children=case.children)
    )
    sql = str(query.compile())
    for value in (
        *case.rows.communities,
        *case.rows.grids,
        *case.rows.buildings,
        *case.children,
        case.resident_id or "rs_",
    ):
        assert value not in sql


def _constraints(scope: RowScope, **ids: tuple[str, ...]) -> RowConstraints:
    return RowConstraints(
        scope=scope,
        communities=ids.get("communities", ()),
        grids=ids.get("grids", ()),
        buildings=ids.get("buildings", ()),
        consent_required=False,
        legal_basis="statutory-duty",
    )


EAST = Home("bd_000", "gd_00", "cm_0")
WEST = Home("bd_010", "gd_01", "cm_0")  # another grid of the same community
NORTH = Home("bd_100", "gd_10", "cm_1")
TOWN = Town(
    (EAST, WEST, NORTH),
    (
        Person("rs_01", EAST, "active", False),
        Person("rs_02", WEST, "active", False),
        Person("rs_03", NORTH, "active", False),
        Person("rs_04", NORTH, "erased", False),
        Person("rs_05", EAST, "active", True),
        Person("rs_06", None, "active", False),
    ),
)


@pytest.mark.parametrize(
    ("rows", "resident_id", "children", "expected"),
    [
        (_constraints(RowScope.ALL), None, (), {"rs_01", "rs_02", "rs_03", "rs_05"}),
        (_constraints(RowScope.NONE, communities=("cm_0",)), "rs_01", ("rs_02",), set()),
        (_constraints(RowScope.SELF), "rs_03", ("rs_01",), {"rs_03"}),
        (_constraints(RowScope.SELF), "rs_04", (), set()),  # erased
        (_constraints(RowScope.SELF), None, (), set()),
        (_constraints(RowScope.SELF), "rs_06", (), set()),  # no home
        (_constraints(RowScope.CHILDREN), "rs_01", ("rs_02", "rs_04"), {"rs_02"}),
        (_constraints(RowScope.CHILDREN), "rs_01", (), set()),
        (_constraints(RowScope.JURISDICTION), None, (), set()),
        (
            _constraints(RowScope.JURISDICTION, communities=("cm_0",)),
            None,
            (),
            {"rs_01", "rs_02", "rs_05"},
        ),
        (
            _constraints(RowScope.JURISDICTION, grids=("gd_01", "gd_10")),
            None,
            (),
            {"rs_02", "rs_03"},
        ),
        (
            _constraints(RowScope.JURISDICTION, buildings=("bd_100",)),
            "rs_01",
            ("rs_02",),
            {"rs_03"},
        ),
    ],
)
def test_each_scope(
    vault: Vault,
    rows: RowConstraints,
    resident_id: str | None,
    children: tuple[str, ...],
    expected: set[str],
) -> None:
    case = Case(TOWN, rows, resident_id, children)
    assert _plainly(case) == expected
    with vault.sessions() as session:
        try:
            _build(session, TOWN)
            assert _selected(session, case) == expected
            assert _selected(session, case, decoys=False) == expected - {"rs_05"}
        finally:
            session.rollback()


def test_area_scopes_and_the_rows_document() -> None:
    assert [s for s in RowScope if by_area(_constraints(s))] == [
        RowScope.ALL,
        RowScope.JURISDICTION,
    ]
    rows = _constraints(RowScope.JURISDICTION, grids=("gd_01",))
    assert rows_document(rows) == {
        "scope": "jurisdiction",
        "communities": [],
        "grids": ["gd_01"],
        "buildings": [],
    }


def test_the_recorded_input_is_the_decision_input_without_the_fields() -> None:
    subject = {"type": "department", "roles": [], "jurisdiction": {"communities": ["cm_0"]}}
    doc = decision_input(subject, purpose="subsidy-review", action="list", target="other")
    assert doc["fields"]
    assert recorded_input(doc, 3) == {
        "subject": subject,
        "purpose": "subsidy-review",
        "action": "list",
        "target": "other",
        "catalogue_version": 3,
    }
