"""The decision's row constraints as SQL: the one compiler every access uses.

`Decision.rows` says which residents a decision covers: everyone (`all`), the caller
themself (`self`), their wards (`children`), the communities, grids or buildings of a
jurisdiction, or no one (`none`). Reads, lists, searches, writes, exports, statistics and
a resident's dry run all narrow residents with `row_filter` alone, over the tables
`with_building` joins, so no access can read the constraints differently from another.
Every value goes into the SQL as a bound parameter; no id is ever spliced into the text.

Only active residents are ever covered. Decoys are the caller's to exclude (or, for a
fingerprinted export's pool, to select): the filter says nothing about them.

A query that reaches residents through a table of its own (statistics count from their
tokens, which carry the resident's building) names where that table keeps the resident's
id and whether they are active (`ResidentColumns`); the same compiler then writes the
same constraints over it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from sqlalchemy import ColumnElement, Select, and_, false, or_, true
from sqlalchemy.orm import InstrumentedAttribute

from policies.interfaces import RowConstraints, RowScope
from vault.models import Building, Household, Resident, Room

__all__ = [
    "ACTIVE",
    "AREA_SCOPES",
    "RESIDENTS",
    "ResidentColumns",
    "building_filter",
    "by_area",
    "place_filter",
    "row_filter",
    "rows_document",
    "with_building",
]

ACTIVE: Final = "active"
AREA_SCOPES: Final = frozenset({RowScope.ALL, RowScope.JURISDICTION})
"""Scopes that cover a place rather than named people: the only ones statistics count
and fingerprinted exports plant decoys in."""

_Q = TypeVar("_Q", bound="Select[*tuple[Any, ...]]")


@dataclass(frozen=True)
class ResidentColumns:
    """Where a query finds each resident's id, and the condition that they are active."""

    id: ColumnElement[str] | InstrumentedAttribute[str]
    active: ColumnElement[bool]


RESIDENTS: Final = ResidentColumns(Resident.id, Resident.status == ACTIVE)
"""The `residents` table itself (what `with_building` joins from)."""


def by_area(rows: RowConstraints) -> bool:
    """Whether the rows cover a place (everywhere, or a jurisdiction), not named people."""
    return rows.scope in AREA_SCOPES


def building_filter(rows: RowConstraints) -> ColumnElement[bool] | None:
    """The buildings the rows reach, over `Building`'s columns: every building for scope
    `all`, a jurisdiction's communities, grids or buildings (any of them) for
    `jurisdiction`; None when the rows reach no building (scope self, children or none,
    or a jurisdiction that names nothing)."""
    if rows.scope == RowScope.ALL:
        return true()
    if rows.scope != RowScope.JURISDICTION:
        return None
    terms: list[ColumnElement[bool]] = []
    if rows.communities:
        terms.append(Building.community_id.in_(list(rows.communities)))
    if rows.grids:
        terms.append(Building.grid_id.in_(list(rows.grids)))
    if rows.buildings:
        terms.append(Building.id.in_(list(rows.buildings)))
    return or_(*terms) if terms else None


def row_filter(
    rows: RowConstraints,
    *,
    resident_id: str | None,
    children: Sequence[str],
    residents: ResidentColumns = RESIDENTS,
) -> ColumnElement[bool]:
    """The active residents the rows cover, over `residents`' columns (`Resident`'s unless
    told) and `Building`'s (join them with `with_building`). `resident_id` and `children`
    are the caller's own id and wards, which scopes self and children name; no id at all
    selects no one."""
    active = residents.active
    scope = rows.scope
    if scope == RowScope.ALL:
        return active
    if scope == RowScope.SELF:
        return and_(residents.id == (resident_id or ""), active)
    if scope == RowScope.CHILDREN:
        return and_(residents.id.in_(list(children)), active)
    if scope == RowScope.JURISDICTION:
        area = building_filter(rows)
        return and_(active, area if area is not None else false())
    return false()


def place_filter(
    *, community: str | None = None, grid: str | None = None, building: str | None = None
) -> ColumnElement[bool]:
    """A caller's narrowing of a list or export to one community, grid or building, on top
    of the decision's rows (it never widens them): over `with_building`'s join."""
    terms = [
        column == value
        for column, value in (
            (Building.community_id, community),
            (Building.grid_id, grid),
            (Building.id, building),
        )
        if value
    ]
    return and_(*terms) if terms else true()


def with_building(query: _Q) -> _Q:
    """`query`, which selects from `Resident`, joined to each resident's household, room
    and building: the tables `row_filter` reads. Residents without a home are left out."""
    return (
        query.join(Household, Household.id == Resident.household_id)
        .join(Room, Room.id == Household.room_id)
        .join(Building, Building.id == Room.building_id)
    )


def rows_document(rows: RowConstraints) -> dict[str, Any]:
    """The rows' reach as plain JSON (scope and the jurisdiction's ids), as explanations
    show it."""
    return {
        "scope": str(rows.scope),
        "communities": list(rows.communities),
        "grids": list(rows.grids),
        "buildings": list(rows.buildings),
    }
