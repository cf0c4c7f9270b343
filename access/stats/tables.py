"""Counting residents without returning rows: a measure's cells per building, rolled up.

The caller (the access gate's side, in `api`) hands over which buildings are in scope and
a query of the residents in scope (jurisdiction, active, never decoys). Only the structure
(which household lives in which building) is read in clear. A measure whose field has
statistics tokens (vault/stat_tokens.py) is one SQL GROUP BY over building and token, with
no field decrypted; the tokens are mapped to labels here and never leave. A measure of any
other field (or of one whose tokens are still being backfilled) has that one field
decrypted in batches, folded into counts at once, and dropped. Nothing but the cell totals
leaves this module, and no value (nor token) is logged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Final

import structlog
from sqlalchemy import Select, and_, func, select
from sqlalchemy.orm import Session

from access.stats.disclosure import Place, Table
from access.stats.measures import TOTAL, Measure, Unit
from policies.rows import ACTIVE, with_building
from vault.catalogue import FieldSpec
from vault.models import Building, Community, Grid, Resident
from vault.services import ResidentStore
from vault.stat_tokens import ResidentStatToken, incomplete_fields, representative

log = structlog.get_logger(__name__)

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

    def add_many(self, spec: FieldSpec | None, value: Any, residents: int, building: str) -> None:
        """`residents` residents of one building with the same value (counted in SQL)."""
        counted = self.measure.classify(spec, value, self.today)
        if counted is None:
            return
        category, amount = counted
        if self.bound is not None:
            amount = max(0, min(amount, self.bound))
        key = (building, category)
        self.sums[key] = self.sums.get(key, 0) + amount * residents
        self.contributors[key] = self.contributors.get(key, 0) + residents

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
    if _countable_in_sql(session, store, measure) and _count_in_sql(
        session, store, spec, tally, scoped
    ):
        return _counted(session, measure, tree, scoped, tally)
    _decrypting(session, store, tally, spec, scoped)
    return _counted(session, measure, tree, scoped, tally)


def _countable_in_sql(session: Session, store: ResidentStore, measure: Measure) -> bool:
    """No field (the structure alone), or a field whose tokens are complete."""
    if measure.field is None:
        return True
    if measure.field not in store.stat_tokens.fields:
        return False
    if incomplete_fields(session, [measure.field]):
        # Correct, only slow: the backfill (`resident-vault stats backfill`) ends this.
        log.warning("stats.tokens_incomplete", field=measure.field, fallback="decrypt")
        return False
    return True


def _count_in_sql(
    session: Session,
    store: ResidentStore,
    spec: FieldSpec | None,
    tally: _Tally,
    scoped: Scoped,
) -> bool:
    """Fold the GROUP BY (building, token) into the tally; False (tally untouched) if a
    token maps to no label of its epoch, which only a damaged table could hold."""
    inner = scoped.subquery()
    resident, household, building = list(inner.columns)[:3]
    source: Any = inner
    keys: list[Any] = [building]
    if spec is not None:
        tokens = ResidentStatToken.__table__
        # Outer join: a resident without the field is one row with no token (value None).
        source = inner.outerjoin(
            tokens, and_(tokens.c.resident_id == resident, tokens.c.field == spec.name)
        )
        keys += [tokens.c.epoch, tokens.c.token]
    households = tally.measure.unit is Unit.HOUSEHOLDS
    if households:
        member = func.coalesce(household, resident)
        query = select(*keys, member).select_from(source).distinct()
    else:
        query = select(*keys, func.count()).select_from(source).group_by(*keys)
    rows = [(r[0], None, None, r[1]) if spec is None else tuple(r) for r in session.execute(query)]
    labels: dict[str, dict[bytes, str]] = {}
    values: list[tuple[str, Any, Any]] = []
    for place, row_epoch, row_token, extra in rows:
        value: Any = None
        if spec is not None and row_token is not None:
            if row_epoch not in labels:
                labels[row_epoch] = store.stat_tokens.labels(spec.name, row_epoch)
            label = labels[row_epoch].get(bytes(row_token))
            if label is None:
                log.error("stats.token_unknown", field=spec.name, fallback="decrypt")
                return False
            value = representative(spec, label)
        values.append((place, value, extra))
    for place, value, extra in values:
        if households:
            tally.add(spec, value, extra, place)
        else:
            tally.population[place] = tally.population.get(place, 0) + int(extra)
            tally.add_many(spec, value, int(extra), place)
    return True


def _decrypting(
    session: Session, store: ResidentStore, tally: _Tally, spec: FieldSpec | None, scoped: Scoped
) -> None:
    """The measure's field decrypted in batches (a field without complete tokens)."""
    measure = tally.measure
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


def _counted(
    session: Session, measure: Measure, tree: Sequence[Place], scoped: Scoped, tally: _Tally
) -> Counted:
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
