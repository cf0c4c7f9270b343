"""Counting residents without returning rows: a measure's cells per building, rolled up.

The caller (the access gate's side, in `api`) hands over which buildings are in scope and
a query of the residents in scope (jurisdiction, active, never decoys). Only the structure
(which household lives in which building) is read in clear; the measure's one field is
decrypted in batches, folded into counts at once, and dropped. Nothing but the cell
totals leaves this module, and no value is logged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Final

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from access.stats.disclosure import Place, Table
from access.stats.measures import TOTAL, Measure, Unit
from policies.rows import ACTIVE, with_building
from vault.catalogue import FieldSpec
from vault.models import Building, Community, Grid, Resident
from vault.services import ResidentStore

Scoped = Select[str, str | None, str]  # (resident, household, building)
ROOT: Final = "all"
LEVELS: Final = ("jurisdiction", "community", "grid", "building")
BATCH: Final = 2000


@dataclass(frozen=True)
class Counted:
    """A measure's table (rolled up to every level), with people per place for the
    attribute rule, and for sums the count of contributors per cell (what suppresses)."""

    table: Table
    population: dict[str, int]
    contributors: Table


def places(session: Session, building_ids: Sequence[str]) -> list[Place]:
    """The jurisdiction's tree, parents first: all of it, then communities, grids,
    buildings (with their public names). Places without residents are listed too."""
    rows = session.execute(
        select(Building.id, Building.name, Grid.id, Grid.name, Community.id, Community.name)
        .join(Grid, Grid.id == Building.grid_id)
        .join(Community, Community.id == Building.community_id)
        .where(Building.id.in_(list(building_ids)))
        .order_by(Community.id, Grid.id, Building.id)
    ).all()
    tree = [Place(ROOT, "jurisdiction", None, "")]
    communities: dict[str, Place] = {}
    grids: dict[str, Place] = {}
    buildings: list[Place] = []
    for building_id, building, grid_id, grid, community_id, community in rows:
        communities.setdefault(community_id, Place(community_id, "community", ROOT, community))
        grids.setdefault(grid_id, Place(grid_id, "grid", community_id, grid))
        buildings.append(Place(building_id, "building", grid_id, building))
    return [*tree, *communities.values(), *grids.values(), *buildings]


def residents_query() -> Scoped:
    """Residents with their household and building, to be narrowed by the caller's row
    filter (which reads Building's columns) and the decoy exclusion."""
    return with_building(select(Resident.id, Resident.household_id, Building.id)).where(
        Resident.is_decoy.is_(False), Resident.status == ACTIVE
    )


class _Tally:
    """Running cell totals for one measure; values are folded in and forgotten."""

    def __init__(
        self, measure: Measure, tree: Sequence[Place], today: date, bound: int | None
    ) -> None:
        self.measure = measure
        self.today = today
        self.bound = bound
        parts = [c for c in measure.categories if c != TOTAL] or [TOTAL]
        buildings = [p.id for p in tree if p.level == "building"]
        self.sums = {(b, c): 0 for b in buildings for c in parts}
        self.contributors = dict(self.sums)
        self.population: dict[str, int] = {}
        self.households: dict[tuple[str, str], set[str]] = {}

    def add(self, spec: FieldSpec | None, value: Any, household_id: str, building: str) -> None:
        counted = self.measure.classify(spec, value, self.today)
        if counted is None:
            return
        category, amount = counted
        key = (building, category)
        if self.measure.unit is Unit.HOUSEHOLDS:
            self.households.setdefault(key, set()).add(household_id)
            return
        if self.bound is not None:
            amount = max(0, min(amount, self.bound))
        self.sums[key] = self.sums.get(key, 0) + amount
        self.contributors[key] = self.contributors.get(key, 0) + 1

    def finish(self) -> None:
        for key, members in self.households.items():
            self.sums[key] = self.contributors[key] = len(members)


def count(
    session: Session,
    store: ResidentStore,
    measure: Measure,
    tree: Sequence[Place],
    scoped: Scoped,
    *,
    today: date,
    bound: int | None = None,
) -> Counted:
    """The measure over the residents `scoped` selects, per building and category.

    `bound` clips each resident's contribution to a sum (differential privacy needs it).
    """
    tally = _Tally(measure, tree, today, bound)
    spec = store.catalogue[measure.field] if measure.field else None
    result = session.execute(scoped.order_by(Resident.id))
    while batch := result.fetchmany(BATCH):
        for _, _, building in batch:
            tally.population[building] = tally.population.get(building, 0) + 1
        values: dict[str, dict[str, Any]] = {}
        if measure.field is not None:
            values = store.read_many(session, [r[0] for r in batch], [measure.field])
        for resident_id, household_id, building in batch:
            value = values.get(resident_id, {}).get(measure.field) if measure.field else None
            tally.add(spec, value, household_id or resident_id, building)
        del values
    tally.finish()
    population = tally.population
    if measure.unit is Unit.HOUSEHOLDS:
        population = _households_per_building(session, scoped)
    table = Table(tree, measure.categories, tally.sums).rolled_up()
    counts = Table(tree, measure.categories, tally.contributors).rolled_up()
    return Counted(table, _rolled_population(tree, population), counts)


def _households_per_building(session: Session, scoped: Scoped) -> dict[str, int]:
    inner = scoped.subquery()
    columns = list(inner.columns)
    rows = session.execute(
        select(columns[2], func.count(func.distinct(columns[1]))).group_by(columns[2])
    ).all()
    return {building: int(n) for building, n in rows}


def _rolled_population(tree: Sequence[Place], per_building: dict[str, int]) -> dict[str, int]:
    """People (or households) per place, summed up the tree deepest level first."""
    result = {p.id: (per_building.get(p.id, 0) if p.level == "building" else 0) for p in tree}
    for level in ("building", "grid", "community"):
        for place in tree:
            if place.level == level and place.parent is not None:
                result[place.parent] += result[place.id]
    return result


def baseline_count(session: Session, scoped: Scoped) -> int:
    """A plain SQL COUNT of the same residents (the benchmark's baseline)."""
    return int(session.scalar(select(func.count()).select_from(scoped.subquery())) or 0)
