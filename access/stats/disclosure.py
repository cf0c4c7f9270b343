"""Statistical disclosure control for hierarchical tables: small cells and subtraction.

A table is a tree of places (the caller's jurisdiction, communities, grids, buildings)
crossed with a measure's categories (with a `total` column when there are several). Every
(place, category) is a cell, and the published cells obey linear relations: a parent is
the sum of its children, a place's total the sum of its categories. One pattern of
suppression is computed for the whole tree, down to buildings, whatever level a query
asks for, so publishing `by=community`, `by=grid` and `by=building` together still
determines no suppressed cell.

1. Primary suppression: a cell counting 1 to k-1 people, and (for attributes such as
   dibao) a cell where fewer than k of the place's people lack the attribute.
2. Complementary suppression, in two passes repeated until neither changes anything:
   - every relation has 0 or at least 2 suppressed cells (the cheap, local rule);
   - no suppressed cell is determined by the published ones: the relations restricted
     to the suppressed cells are put in reduced row echelon form (exact, modulo a large
     prime) and a cell whose row has no free variable is solved; another cell of one of
     its relations is suppressed. This catches what the local rule misses in
     two-dimensional tables (a "bridge" between two otherwise protected blocks).
   Complements are the smallest non-zero cells of the relation, so the least is lost.

Cells can be `fixed` by an earlier table (a place's total is the `residents` measure's
cell): they keep the state that table gave them and are never chosen as complements.
Pure Python, no database, no HTTP.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from access.stats.measures import TOTAL

Cell = tuple[str, str]  # (place id, category)

# 2^61 - 1: ranks of 0/±1 matrices modulo this prime equal their ranks over the rationals
# unless a minor is a multiple of it, which tables of this size cannot reach.
_PRIME: Final = (1 << 61) - 1


@dataclass(frozen=True)
class Place:
    id: str
    level: str  # jurisdiction | community | grid | building
    parent: str | None
    name: str = ""


@dataclass
class Table:
    """Places (parents before children) x categories, with a value for every cell."""

    places: Sequence[Place]
    categories: Sequence[str]
    values: dict[Cell, int] = field(default_factory=dict)

    def cells(self) -> list[Cell]:
        return [(p.id, c) for p in self.places for c in self.categories]

    def children(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {p.id: [] for p in self.places}
        for place in self.places:
            if place.parent is not None:
                found[place.parent].append(place.id)
        return found

    def relations(self) -> list[tuple[Cell, list[Cell]]]:
        """Every (whole, parts) with whole = sum(parts)."""
        found: list[tuple[Cell, list[Cell]]] = []
        kids = self.children()
        for place in self.places:
            if kids[place.id]:
                for category in self.categories:
                    found.append(((place.id, category), [(k, category) for k in kids[place.id]]))
        parts = [c for c in self.categories if c != TOTAL]
        if TOTAL in self.categories and parts:
            for place in self.places:
                found.append(((place.id, TOTAL), [(place.id, c) for c in parts]))
        return found

    def rolled_up(self) -> Table:
        """Parents and totals filled in from the leaves' category cells."""
        values = dict(self.values)
        parts = [c for c in self.categories if c != TOTAL]
        kids = self.children()
        for place in reversed(self.places):
            if kids[place.id]:
                for category in parts:
                    values[(place.id, category)] = sum(
                        values.get((k, category), 0) for k in kids[place.id]
                    )
            if TOTAL in self.categories and parts:
                values[(place.id, TOTAL)] = sum(values.get((place.id, c), 0) for c in parts)
            elif TOTAL in self.categories and kids[place.id]:
                values[(place.id, TOTAL)] = sum(values.get((k, TOTAL), 0) for k in kids[place.id])
        return Table(self.places, self.categories, values)


def primary(table: Table, k: int, population: Mapping[str, int] | None = None) -> set[Cell]:
    """Cells of 1..k-1; with `population` (people per place), also cells within k of it."""
    found = {cell for cell, value in table.values.items() if 0 < value < k}
    if population is not None:
        for (place, category), value in table.values.items():
            if value > 0 and population.get(place, 0) - value < k:
                found.add((place, category))
    return found


def suppress(
    table: Table,
    k: int,
    *,
    population: Mapping[str, int] | None = None,
    fixed: Mapping[Cell, bool] | None = None,
) -> set[Cell]:
    """The suppressed cells: primary ones and enough complements that none can be solved.

    `fixed` maps cells to the state another table already published them in (True:
    suppressed); they keep it. If no complement can be found for a solvable cell (only
    fixed cells left around it), every non-fixed cell is suppressed: nothing leaks.
    """
    fixed = dict(fixed or {})
    hidden = {c for c in primary(table, k, population) if c not in fixed}
    hidden |= {c for c, state in fixed.items() if state}
    relations = table.relations()
    while True:
        changed = _local_rule(table, relations, hidden, fixed)
        solved = determined(relations, hidden)
        if not solved:
            if not changed:
                return hidden
            continue
        for cell in sorted(solved):
            complement = _complement(table, relations, hidden, fixed, cell)
            if complement is None:
                return hidden | {c for c in table.cells() if c not in fixed}
            hidden.add(complement)


def _rank(table: Table, cell: Cell) -> tuple[bool, int, Cell]:
    value = table.values.get(cell, 0)
    return (value == 0, value, cell)


def _local_rule(
    table: Table,
    relations: Sequence[tuple[Cell, list[Cell]]],
    hidden: set[Cell],
    fixed: Mapping[Cell, bool],
) -> bool:
    """Give every relation with exactly one suppressed cell a second one."""
    changed = False
    again = True
    while again:
        again = False
        for whole, parts in relations:
            members = [whole, *parts]
            inside = [c for c in members if c in hidden]
            if len(inside) != 1:
                continue
            # A lone suppressed part pairs with a sibling first (the whole stays useful);
            # a lone suppressed whole needs a part.
            siblings = [c for c in parts if c not in hidden and c not in fixed]
            candidates = sorted(siblings, key=lambda c: _rank(table, c))
            if inside[0] != whole and whole not in fixed:
                candidates.append(whole)
            if candidates:
                hidden.add(candidates[0])
                changed = again = True
    return changed


def _complement(
    table: Table,
    relations: Sequence[tuple[Cell, list[Cell]]],
    hidden: set[Cell],
    fixed: Mapping[Cell, bool],
    cell: Cell,
) -> Cell | None:
    """A published cell sharing a relation with `cell`, smallest non-zero first; failing
    that, one in any relation that holds a suppressed cell."""
    near = [r for r in relations if cell == r[0] or cell in r[1]]
    for pool in (near, [r for r in relations if hidden & {r[0], *r[1]}]):
        candidates = {c for whole, parts in pool for c in (whole, *parts)}
        candidates = {c for c in candidates if c not in hidden and c not in fixed}
        if candidates:
            return min(candidates, key=lambda c: _rank(table, c))
    return None


def determined(
    relations: Iterable[tuple[Cell, Sequence[Cell]]], hidden: Iterable[Cell]
) -> set[Cell]:
    """Suppressed cells whose value follows from the published cells and the relations.

    The relations, restricted to the suppressed cells (published ones are constants),
    form A x = b; x_j is determined exactly when e_j is in A's row space, i.e. when in
    the reduced row echelon form x_j is a pivot whose row has no free variable.
    """
    unknown = sorted(set(hidden))
    column = {cell: j for j, cell in enumerate(unknown)}
    rows: list[dict[int, int]] = []
    for whole, parts in relations:
        row: dict[int, int] = {}
        if whole in column:
            row[column[whole]] = _PRIME - 1
        for part in parts:
            if part in column:
                j = column[part]
                row[j] = (row.get(j, 0) + 1) % _PRIME
        row = {j: v for j, v in row.items() if v}
        if row:
            rows.append(row)
    pivots = _rref(rows)
    return {unknown[j] for j, row in pivots.items() if len(row) == 1}


def _rref(rows: list[dict[int, int]]) -> dict[int, dict[int, int]]:
    """Reduced row echelon form of sparse rows modulo the prime: pivot column -> row."""
    pivots: dict[int, dict[int, int]] = {}
    for original in rows:
        row = dict(original)
        for j, pivot_row in pivots.items():
            factor = row.get(j)
            if factor:
                _subtract(row, pivot_row, factor)
        if not row:
            continue
        j = min(row)
        inverse = pow(row[j], _PRIME - 2, _PRIME)
        row = {c: v * inverse % _PRIME for c, v in row.items()}
        for other in pivots.values():
            factor = other.get(j)
            if factor:
                _subtract(other, row, factor)
        pivots[j] = row
    return pivots


def _subtract(row: dict[int, int], pivot_row: Mapping[int, int], factor: int) -> None:
    for c, v in pivot_row.items():
        value = (row.get(c, 0) - factor * v) % _PRIME
        if value:
            row[c] = value
        else:
            row.pop(c, None)
