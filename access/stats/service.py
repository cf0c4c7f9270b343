"""Statistics without row access: one query, decided, counted, protected and recorded.

HTTP-free, like the gate it calls. A query is decided by policy once (action `stats`),
counted over the residents the decision's rows allow (never decoys), then protected:
small cells and complementary suppression by default (`access.stats.disclosure`), or noise from
OpenDP with a privacy budget per organisation per calendar month (China time). Each query
is one audit entry naming the measure, the level, the cells, how many were suppressed and
the epsilon spent; the budget spent is the sum of those entries (the log is the ledger).
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, Final

from sqlalchemy import ColumnElement, literal, select, text
from sqlalchemy.orm import Session

from access.errors import GateError, PolicyDenied
from access.gate import Gate
from access.settings import StatsSettings
from access.stats.disclosure import Cell, Place, Table, suppress
from access.stats.measures import MEASURES, TOTAL, Measure
from access.stats.noise import Mechanism, release
from access.stats.tables import LEVELS, Counted, RowFilter, count, places
from access.subjects import Access
from audit.models import AuditEntry
from policies import Decision
from policies.rows import building_filter, by_area
from vault import i18n
from vault.i18n import Message
from vault.models import utcnow

ACTION: Final = "stats"
CHINA: Final = timezone(timedelta(hours=8))  # no daylight saving: a fixed offset is exact
BY_LEVELS: Final = ("community", "grid", "building")


# -- errors -------------------------------------------------------------------------------


class UnknownMeasure(GateError):
    slug = "not-found"


class BadStatsQuery(GateError):
    """A query parameter out of range; `field` names it."""

    slug = "validation-error"

    def __init__(
        self, field_name: str, message: Message, decision: Decision | None, access: Access
    ) -> None:
        super().__init__(message, decision, decision_id=access.decision_id)
        self.field = field_name


class BudgetExhausted(GateError):
    """429: this period's epsilon is spent (or this query would overspend it); the budget
    rides along, and `retry_after` is the wait until it renews."""

    slug = "budget-exhausted"

    def __init__(self, budget: Budget, decision: Decision | None, access: Access) -> None:
        message = Message(
            "error.stats.budget-exhausted",
            {
                # ISO 8601 in China time, with its offset, in both languages
                "remaining": budget.remaining,
                "renews_at": budget.renews_at.astimezone(CHINA).isoformat(timespec="seconds"),
            },
        )
        wait = (budget.renews_at - utcnow()).total_seconds()
        super().__init__(message, decision, decision_id=access.decision_id, retry_after=wait)
        self.budget = budget


# -- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    period: str
    total: float
    spent: float
    renews_at: datetime

    @property
    def remaining(self) -> float:
        return max(0.0, self.total - self.spent)

    def as_dict(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "epsilon_total": self.total,
            "epsilon_spent": round(self.spent, 6),
            "epsilon_remaining": round(self.remaining, 6),
            "renews_at": self.renews_at.isoformat(),
        }


@dataclass(frozen=True)
class PublishedPlace:
    place: Place
    values: dict[str, int | None]


@dataclass(frozen=True)
class StatsResult:
    measure: Measure
    by: str
    categories: tuple[str, ...]
    cells: list[PublishedPlace]
    totals: list[PublishedPlace]
    decision: Decision
    disclosure: dict[str, Any]
    budget: Budget
    suppressed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def period_of(now: datetime) -> tuple[str, datetime, datetime]:
    """The calendar month (China time) holding `now`: its label, start and end (UTC)."""
    local = now.astimezone(CHINA)
    start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return f"{start:%Y-%m}", start.astimezone(UTC), end.astimezone(UTC)


class StatsService:
    def __init__(self, gate: Gate, settings: StatsSettings | None = None) -> None:
        self.gate = gate
        self.settings = settings or StatsSettings()
        self._ledger_lock = threading.Lock()

    # -- budget ------------------------------------------------------------------------

    @staticmethod
    def _ledger_owner(access: Access) -> ColumnElement[bool]:
        subject = access.subject
        if subject.organisation:
            return AuditEntry.organisation == subject.organisation
        return AuditEntry.client == (subject.client or "")

    def budget(self, access: Access, session: Session | None = None) -> Budget:
        """This period's budget, from the allowed `stats` entries of the caller's
        organisation: the log is the ledger, so nothing else can drift from it."""
        label, start, end = period_of(utcnow())
        if session is None:
            with self.gate.runtime.vault.sessions() as own:
                return self.budget(access, own)
        entries = select(AuditEntry.details).where(
            # Written into the SQL, so that SQLite too sees that the ledger's partial index
            # (organisation, recorded_at) applies: it cannot tell from a bound parameter.
            AuditEntry.action == literal(ACTION, literal_execute=True),
            AuditEntry.outcome == "allowed",
            AuditEntry.recorded_at >= start,
            AuditEntry.recorded_at < end,
            self._ledger_owner(access),
        )
        details = session.scalars(entries)
        spent = sum(float((d or {}).get("epsilon") or 0.0) for d in details)
        return Budget(label, self.settings.epsilon_per_month, spent, end)

    @contextmanager
    def _ledger(self, access: Access) -> Iterator[Session]:
        """One transaction in which the budget is read and the spending entry written,
        serialised per organisation (a lock here, an advisory lock on PostgreSQL)."""
        with self._ledger_lock, self.gate.runtime.transaction() as session:
            if session.get_bind().dialect.name == "postgresql":
                owner = access.subject.organisation or access.subject.client or ""
                session.execute(
                    text("SELECT pg_advisory_xact_lock(:a, :b)"),
                    {"a": 0x5354, "b": zlib.crc32(owner.encode()) - (1 << 31)},
                )
            yield session

    # -- queries -----------------------------------------------------------------------

    def _check(
        self, access: Access, name: str, by: str, noise: str | None, epsilon: float | None
    ) -> tuple[Decision, Measure, Mechanism | None, float]:
        decision = self.gate.decide(access, ACTION)
        if by not in BY_LEVELS:
            raise BadStatsQuery("by", Message("error.stats.by"), decision, access)
        mechanism: Mechanism | None = None
        if noise is not None:
            try:
                mechanism = Mechanism(noise)
            except ValueError:
                raise BadStatsQuery(
                    "noise", Message("error.stats.noise"), decision, access
                ) from None
        spend = epsilon if epsilon is not None else self.settings.default_epsilon
        if mechanism is not None and not 0 < spend <= self.settings.max_epsilon:
            most = {"most": self.settings.max_epsilon}
            raise BadStatsQuery("epsilon", Message("error.stats.epsilon", most), decision, access)
        if decision.rows.consent_required:
            raise PolicyDenied(
                Message("error.stats.consent-basis"), decision, decision_id=access.decision_id
            )
        measure = MEASURES.get(name)
        if measure is None:
            raise UnknownMeasure(
                Message("error.stats.unknown-measure"), decision, decision_id=access.decision_id
            )
        if measure.field is not None and str(decision.treatment(measure.field)) == "denied":
            raise PolicyDenied(
                Message("error.stats.field-denied", {"field": measure.field}),
                decision,
                decision_id=access.decision_id,
            )
        return decision, measure, mechanism, spend

    def query(
        self,
        access: Access,
        name: str,
        by: str,
        *,
        noise: str | None = None,
        epsilon: float | None = None,
        today: date | None = None,
    ) -> StatsResult:
        with self.gate.denials_recorded(access, ACTION):
            decision, measure, mechanism, spend = self._check(access, name, by, noise, epsilon)
            today = today or utcnow().astimezone(CHINA).date()
            if mechanism is None:
                return self._suppressed(access, decision, measure, by, today)
            return self._noisy(
                access,
                decision=decision,
                measure=measure,
                by=by,
                mechanism=mechanism,
                spend=spend,
                today=today,
            )

    def _scope(self, access: Access, decision: Decision) -> tuple[ColumnElement[bool], RowFilter]:
        if not by_area(decision.rows):
            raise PolicyDenied(
                Message("error.stats.by-area"), decision, decision_id=access.decision_id
            )
        where = building_filter(decision.rows)
        if where is None:
            raise PolicyDenied(
                Message("error.stats.no-jurisdiction"), decision, decision_id=access.decision_id
            )
        return where, lambda residents: self.gate.row_filter(access, decision, residents)

    def _count(
        self,
        access: Access,
        decision: Decision,
        measure: Measure,
        today: date,
        bound: int | None = None,
    ) -> tuple[list[Place], Counted, Counted | None]:
        """The measure, and for a table with a total column the residents measure too
        (its cells are the totals, published as that measure publishes them)."""
        covered, rows = self._scope(access, decision)
        store = self.gate.runtime.vault.store
        # Counting reads residents' rows from the read replica when there is one (data keys
        # from the primary); the budget and its ledger entry stay on the primary.
        with self.gate.runtime.vault.read_sessions() as session:
            tree = places(session, covered)
            counted = count(session, store, measure, tree, rows, today=today, bound=bound)
            residents = None
            if len(measure.categories) > 1:
                residents = count(session, store, MEASURES["residents"], tree, rows, today=today)
        return tree, counted, residents

    def _suppressed(
        self, access: Access, decision: Decision, measure: Measure, by: str, today: date
    ) -> StatsResult:
        k = self.settings.threshold
        tree, counted, residents = self._count(access, decision, measure, today)
        fixed: dict[Cell, bool] | None = None
        if residents is not None:
            hidden_totals = suppress(residents.table, k)
            fixed = {(p.id, TOTAL): (p.id, TOTAL) in hidden_totals for p in tree}
        # Sums are suppressed as their contributors' counts are; counts as themselves.
        basis = counted.contributors if measure.is_sum else counted.table
        hidden = suppress(
            basis, k, population=counted.population if measure.attribute else None, fixed=fixed
        )
        cells, totals = _publish(tree, counted.table, by, hidden)
        suppressed = _nulls(cells) + _nulls(totals)
        disclosure = {
            "method": "suppression",
            "threshold": k,
            "suppressed": suppressed,
            "note_zh": i18n.text("stats.note.suppression", "zh", k=k),
            "note_en": i18n.text("stats.note.suppression", "en", k=k),
        }
        with self.gate.runtime.transaction() as session:
            budget = self.budget(access, session)
            result = StatsResult(
                measure,
                by,
                tuple(measure.categories),
                cells,
                totals,
                decision,
                disclosure,
                budget,
                suppressed,
            )
            self._record(
                session,
                access,
                result,
                details={"threshold": k, "epsilon": 0.0, "period": budget.period},
            )
        return result

    def _noisy(
        self,
        access: Access,
        *,
        decision: Decision,
        measure: Measure,
        by: str,
        mechanism: Mechanism,
        spend: float,
        today: date,
    ) -> StatsResult:
        bound = measure.bound if measure.is_sum else None
        tree, counted, _ = self._count(access, decision, measure, today, bound=bound)
        parts = [c for c in measure.categories if c != TOTAL] or [TOTAL]
        level = [p for p in tree if p.level == by]
        keys = [(p.id, c) for p in level for c in parts]
        with self._ledger(access) as session:
            budget = self.budget(access, session)
            if budget.spent + spend > budget.total + 1e-9:
                raise BudgetExhausted(budget, decision, access)
            noisy = release(
                [counted.table.values.get(key, 0) for key in keys],
                mechanism=mechanism,
                epsilon=spend,
                sensitivity=measure.bound if measure.is_sum else 1,
                delta=self.settings.delta,
            )
            # Post-processing (free under DP): no negative counts, totals summed up.
            leaf = {key: max(0, v) for key, v in zip(keys, noisy.values, strict=True)}
            above = [p for p in tree if LEVELS.index(p.level) <= LEVELS.index(by)]
            table = Table(above, measure.categories, leaf).rolled_up()
            cells, totals = _publish(above, table, by, set())
            disclosure = {
                "method": "differential-privacy",
                "mechanism": str(mechanism),
                "epsilon": noisy.epsilon,
                "delta": noisy.delta or None,
                "scale": noisy.scale,
                "note_zh": i18n.text("stats.note.noise", "zh"),
                "note_en": i18n.text("stats.note.noise", "en"),
            }
            spent = Budget(
                budget.period, budget.total, budget.spent + noisy.epsilon, budget.renews_at
            )
            result = StatsResult(
                measure, by, tuple(measure.categories), cells, totals, decision, disclosure, spent
            )
            self._record(
                session,
                access,
                result,
                details={
                    "epsilon": noisy.epsilon,
                    "delta": noisy.delta,
                    "mechanism": str(mechanism),
                    "period": budget.period,
                },
            )
        return result

    def _record(
        self, session: Session, access: Access, result: StatsResult, details: dict[str, Any]
    ) -> None:
        """The table's one audit entry: which measure, by what, how many cells published."""
        measure, decision = result.measure, result.decision
        fields = {measure.field: str(decision.treatment(measure.field))} if measure.field else {}
        published = sum(len(p.values) for p in (*result.cells, *result.totals))
        self.gate.runtime.audit.record(
            session,
            [
                access.entry(
                    ACTION,
                    "allowed",
                    legal_basis=decision.rows.legal_basis,
                    fields=fields,
                    decision_id=access.decision_id,
                    evaluation_id=decision.evaluation_id,
                    policy_revision=decision.revision,
                    details={
                        "measure": measure.name,
                        "by": result.by,
                        "cells": published,
                        "suppressed": result.suppressed,
                        **details,
                    },
                )
            ],
        )


def _publish(
    tree: list[Place], table: Table, by: str, hidden: set[Cell]
) -> tuple[list[PublishedPlace], list[PublishedPlace]]:
    """The places at level `by` (cells) and every place above them (totals)."""
    depth = LEVELS.index(by)
    cells: list[PublishedPlace] = []
    totals: list[PublishedPlace] = []
    for place in tree:
        at = LEVELS.index(place.level)
        if at > depth:
            continue
        values = {
            c: (None if (place.id, c) in hidden else table.values.get((place.id, c), 0))
            for c in table.categories
        }
        (cells if at == depth else totals).append(PublishedPlace(place, values))
    return cells, totals


def _nulls(published: list[PublishedPlace]) -> int:
    return sum(1 for p in published for v in p.values.values() if v is None)
