"""Counting residents without returning rows: a measure's cells per building, rolled up.

The caller (the statistics service) hands over the buildings in scope (a condition over
`Building`) and the decision's row filter (from `policies.rows`); decoys are never
counted. Only the structure (which household lives in which building) is read in clear.

A measure whose field has statistics tokens (vault/stat_tokens.py) is one SQL GROUP BY of
`resident_stats`, one row per counted resident with their building and a slot per field,
in the buildings the row filter covers: no residents, households, rooms or a row per
field joined, and no field decrypted. The tokens are mapped to labels here and never
leave. A measure of the structure alone (how many residents or households) is the same
GROUP BY without a token. Until migration 0027 has run, the residents are joined to their
homes and to the token rows older nodes write instead. A measure of any other field (or of
one whose tokens are still being backfilled) has that one field decrypted in batches,
folded into counts at once, and dropped. Nothing but the cell totals leaves this module,
and no value (nor token) is logged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Final, cast

import structlog
from sqlalchemy import ColumnElement, FromClause, Select, and_, case, func, select, text, true
from sqlalchemy import Table as SqlTable
from sqlalchemy.orm import Session

from access.stats.disclosure import Place, Table
from access.stats.measures import TOTAL, Measure, Unit
from policies.rows import RESIDENTS, ResidentColumns, with_building
from vault.catalogue import FieldSpec
from vault.models import Building, Community, Grid, Resident
from vault.services import ResidentStore
from vault.stat_tokens import (
    LEGACY_TOKENS,
    NOT_SET,
    ResidentStats,
    incomplete_fields,
    representative,
    slot_sql,
)

log = structlog.get_logger(__name__)

Scoped = Select[str, str | None, str]  # (resident, household, building)
RowFilter = Callable[[ResidentColumns], ColumnElement[bool]]
"""The decision's row filter, compiled over the table a count reads (`policies.rows`)."""
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


def places(session: Session, covered: ColumnElement[bool]) -> list[Place]:
    """The jurisdiction's tree, parents first: all of it, then communities, grids, the
    buildings `covered` (a condition over Building) selects, with their public names.
    Places without residents are listed too."""
    rows = session.execute(
        select(Building.id, Building.name, Grid.id, Grid.name, Community.id, Community.name)
        .join(Grid, Grid.id == Building.grid_id)
        .join(Community, Community.id == Building.community_id)
        .where(covered)
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


def residents_query(rows: RowFilter) -> Scoped:
    """The residents the row filter covers (never decoys), with their household and
    building, through their households and rooms (what the decrypting count reads)."""
    return with_building(select(Resident.id, Resident.household_id, Building.id)).where(
        Resident.is_decoy.is_(False), rows(RESIDENTS)
    )


@dataclass(frozen=True)
class _Source:
    """What a GROUP BY reads: a from clause and condition, with its residents' id,
    household and building columns, and the (epoch, token) of the measure's field."""

    source: FromClause
    where: ColumnElement[bool]
    resident: ColumnElement[Any]
    household: ColumnElement[Any]
    building: ColumnElement[Any]
    tokens: tuple[ColumnElement[Any], ...] = ()
    legacy: bool = False  # token rows of older nodes: a field not set has none


def _own_rows(rows: RowFilter, slot: int | None) -> _Source:
    """The residents' statistics rows in buildings the row filter covers (after 0027). Each
    row is an active resident's (an erasure deletes it) who is not a decoy (none has one),
    so the filter is compiled over the rows' resident column, everyone in them active.
    The buildings are a subquery rather than a join: SQLite then looks each row's building
    up in a list made once, not in the buildings' b-tree (1.4 s against 1.9 s at 10^6)."""
    stats = cast(SqlTable, ResidentStats.__table__)
    columns = stats.c
    tokens: tuple[ColumnElement[Any], ...] = ()
    if slot is not None:
        tokens = (columns.epoch, slot_sql(columns.tokens, slot))
    covered = select(Building.id).where(rows(ResidentColumns(columns.resident_id, true())))
    return _Source(
        stats,
        columns.building_id.in_(covered),
        columns.resident_id,
        columns.household_id,
        columns.building_id,
        tokens,
    )


def _joined_rows(rows: RowFilter, field: str | None = None) -> _Source:
    """The residents joined to their homes, and to one field's token rows if told (before
    0027, and for the decrypting count)."""
    inner = residents_query(rows).subquery()
    resident, household, building = list(inner.columns)[:3]
    if field is None:
        return _Source(inner, true(), resident, household, building)
    tokens = LEGACY_TOKENS.c
    # Outer join: a resident without the field is one row with no token (value None).
    source = inner.outerjoin(
        LEGACY_TOKENS, and_(tokens.resident_id == resident, tokens.field == field)
    )
    return _Source(
        source, true(), resident, household, building, (tokens.epoch, tokens.token), True
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
    rows: RowFilter,
    *,
    today: date,
    bound: int | None = None,
) -> Counted:
    """The measure over the residents the row filter `rows` covers, per building and
    category.

    `bound` clips each resident's contribution to a sum (differential privacy needs it).
    """
    tally = _Tally(measure, tree, today, bound)
    spec = store.catalogue[measure.field] if measure.field else None
    if session.get_bind().dialect.name == "postgresql":
        # JIT compiles for longer (about 90 ms) than the count of 10^6 rows takes to run.
        session.execute(text("SET LOCAL jit = off"))
    source = _rows_to_count(session, store, measure, rows)
    if source is not None and _count_in_sql(session, store, spec, tally, source):
        return _counted(session, measure, tree, source, tally)
    _decrypting(session, store, tally, spec, rows)
    return _counted(session, measure, tree, _joined_rows(rows), tally)


def _rows_to_count(
    session: Session, store: ResidentStore, measure: Measure, rows: RowFilter
) -> _Source | None:
    """What the GROUP BY reads; None when the measure's field has to be decrypted (it has
    no tokens, or they are still being backfilled)."""
    tokens = store.stat_tokens
    contracted = tokens.contracted(session)
    if measure.field is None:
        return _own_rows(rows, None) if contracted else _joined_rows(rows)
    if measure.field not in tokens.fields:
        return None
    slot = tokens.slots(session).get(measure.field) if contracted else None
    if (contracted and slot is None) or incomplete_fields(session, [measure.field]):
        # Correct, only slow: the backfill (`resident-vault stats backfill`) ends this.
        log.warning("stats.tokens_incomplete", field=measure.field, fallback="decrypt")
        return None
    return _own_rows(rows, slot) if contracted else _joined_rows(rows, measure.field)


def _count_in_sql(
    session: Session,
    store: ResidentStore,
    spec: FieldSpec | None,
    tally: _Tally,
    rows_of: _Source,
) -> bool:
    """Fold the GROUP BY (building, token) into the tally; False (tally untouched) if a
    token maps to no label of its epoch, or a slot was never computed, which only a
    damaged table could hold."""
    households = tally.measure.unit is Unit.HOUSEHOLDS
    postgresql = session.get_bind().dialect.name == "postgresql"
    if spec is not None and not households and not rows_of.legacy and postgresql:
        # PostgreSQL hashes 10^6 rows by building alone in about half the time it takes
        # by (building, token): 0.5 s against 0.9 s. SQLite sorts for either and works out
        # the slot once per sum, so there the GROUP BY (building, token) is faster.
        return _count_by_slot(session, store, spec, tally, rows_of)
    keys: list[Any] = [rows_of.building, *rows_of.tokens]
    if households:
        member = func.coalesce(rows_of.household, rows_of.resident)
        query = select(*keys, member).distinct()
    else:
        query = select(*keys, func.count()).group_by(*keys)
    query = query.select_from(rows_of.source).where(rows_of.where)
    found = [(r[0], None, None, r[1]) if spec is None else tuple(r) for r in session.execute(query)]
    labels: dict[str, dict[bytes, str]] = {}
    values: list[tuple[str, Any, Any]] = []
    for place, row_epoch, row_token, extra in found:
        value: Any = None
        token = None if row_token is None else bytes(row_token)
        not_set = token is None if rows_of.legacy else token == NOT_SET
        if spec is not None and not not_set:
            if row_epoch is not None and row_epoch not in labels:
                labels[row_epoch] = store.stat_tokens.labels(spec.name, row_epoch)
            label = labels.get(row_epoch or "", {}).get(token or b"")
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


def _count_by_slot(
    session: Session, store: ResidentStore, spec: FieldSpec, tally: _Tally, rows_of: _Source
) -> bool:
    """Residents per building and token, as one row per building: a sum for each token the
    field's labels have under each epoch the keyring holds (and for NOT_SET), so the
    database groups by building alone and hands back one row per building. A slot that is
    none of them (UNKNOWN, or a damaged one) makes it False, the tally untouched."""
    tokens = store.stat_tokens
    known: dict[bytes, Any] = {NOT_SET: None}
    for epoch in tokens.epochs():
        for token, label in tokens.labels(spec.name, epoch).items():
            known[token] = representative(spec, label)
    slot = rows_of.tokens[1]
    matching = [func.sum(case((slot == token, 1), else_=0)) for token in known]
    other = func.sum(case((slot.in_(list(known)), 0), else_=1))
    query = (
        select(rows_of.building, other, *matching)
        .select_from(rows_of.source)
        .where(rows_of.where)
        .group_by(rows_of.building)
    )
    found = session.execute(query).all()
    if any(row[1] for row in found):
        log.error("stats.token_unknown", field=spec.name, fallback="decrypt")
        return False
    values = list(known.values())
    for place, _, *counts in found:
        for value, residents in zip(values, counts, strict=True):
            if residents:
                tally.population[place] = tally.population.get(place, 0) + int(residents)
                tally.add_many(spec, value, int(residents), place)
    return True


def _decrypting(
    session: Session,
    store: ResidentStore,
    tally: _Tally,
    spec: FieldSpec | None,
    rows: RowFilter,
) -> None:
    """The measure's field decrypted in batches (a field without complete tokens)."""
    measure = tally.measure
    result = session.execute(residents_query(rows).order_by(Resident.id))
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
    session: Session, measure: Measure, tree: Sequence[Place], rows_of: _Source, tally: _Tally
) -> Counted:
    tally.finish()
    population = tally.population
    if measure.unit is Unit.HOUSEHOLDS:
        population = _households_per_building(session, rows_of)
    table = Table(tree, measure.categories, tally.sums).rolled_up()
    counts = Table(tree, measure.categories, tally.contributors).rolled_up()
    return Counted(table, _rolled_population(tree, population), counts)


def _households_per_building(session: Session, rows_of: _Source) -> dict[str, int]:
    found = session.execute(
        select(rows_of.building, func.count(func.distinct(rows_of.household)))
        .select_from(rows_of.source)
        .where(rows_of.where)
        .group_by(rows_of.building)
    ).all()
    return {building: int(n) for building, n in found}


def _rolled_population(tree: Sequence[Place], per_building: dict[str, int]) -> dict[str, int]:
    """People (or households) per place, summed up the tree deepest level first."""
    result = {p.id: (per_building.get(p.id, 0) if p.level == "building" else 0) for p in tree}
    for level in ("building", "grid", "community"):
        for place in tree:
            if place.level == level and place.parent is not None:
                result[place.parent] += result[place.id]
    return result
