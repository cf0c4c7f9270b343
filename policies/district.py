"""The district's policy data, from the database, at a data revision, in every engine.

The purpose registry (`vault.purposes`) and the mandates in force (`vault.mandates`) make
the document at `data.district`. `DistrictEngine` sits in front of the engine the gate
asks: before each decision it reads the data revision (one indexed `max(id)`), and when
the revision moved (or a mandate ran out since) it rebuilds the document and loads it
into the engine (embedded: `set_data`; OPA server: its data API). So a grant or a
revocation, made on any node sharing the database, is in force on the next request on
every node, with no restart; the decision cache empties with the revision.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeGuard

from sqlalchemy.orm import Session

from policies.interfaces import Decision, PolicyEngine
from vault.mandates import BASES, lapsed_since, mandates_in_force, next_lapse
from vault.models import utcnow
from vault.policy_data import changed_at, data_revision
from vault.purposes import registered_purposes

__all__ = [
    "DistrictAware",
    "DistrictData",
    "DistrictEngine",
    "district_data",
    "follow_district",
    "is_engine",
]


@dataclass(frozen=True)
class DistrictData:
    """The document at data.district, what revision it is, and when it next runs out."""

    revision: str
    document: Mapping[str, Any]
    next_lapse: datetime | None
    # The change count read first: a change committed while the rest was read has a
    # higher count, so the next request reloads (PostgreSQL reads at READ COMMITTED).
    changes: int


def _revision_label(session: Session, revision: int, now: datetime) -> str:
    """The change count, and how many mandates ran out since that change: a mandate that
    lapses changes what is allowed with no write, so the label must move too."""
    since = changed_at(session, revision)
    lapsed = lapsed_since(session, since, now) if since is not None else []
    return f"{revision}" if not lapsed else f"{revision}.{len(lapsed)}"


def district_data(session: Session, now: datetime | None = None) -> DistrictData:
    """The district's policy data as it stands (read in one transaction)."""
    now = now or utcnow()
    changes = data_revision(session)
    revision = _revision_label(session, changes, now)
    purposes = registered_purposes(session)
    mandates: dict[str, dict[str, Any]] = {}
    for mandate, kind in mandates_in_force(session, now):
        purpose = purposes.get(mandate.purpose)
        if purpose is None:
            continue
        entry = mandates.setdefault(
            mandate.organisation, {"type": kind, "purposes": [], "grants": {}}
        )
        entry["purposes"].append(mandate.purpose)
        entry["grants"][mandate.purpose] = {
            "actions": list(mandate.actions),
            "fields": None if mandate.fields is None else list(mandate.fields),
            "legal_basis": BASES.get(mandate.basis) or purpose.get("legal_basis"),
            "basis": mandate.basis,
        }
    document = {"revision": revision, "purposes": purposes, "mandates": mandates}
    return DistrictData(
        revision=revision, document=document, next_lapse=next_lapse(session, now), changes=changes
    )


class DistrictAware(PolicyEngine, Protocol):
    """An engine that takes the district's data (EmbeddedEngine, OpaServerEngine)."""

    def load_district(self, district: Mapping[str, Any]) -> str: ...


Sessions = Callable[[], AbstractContextManager[Session]]


class DistrictEngine:
    """A `PolicyEngine` that keeps another engine's district data at the database's
    revision. Put it outermost (over the decision cache), so every evaluation checks."""

    def __init__(
        self,
        engine: PolicyEngine,
        target: DistrictAware,
        sessions: Sessions,
        clock: Callable[[], datetime] = utcnow,
        stamp: Callable[[], int] | None = None,
    ) -> None:
        """`engine` is what is asked (e.g. a `CachedEngine` over `target`); `target` is the
        engine underneath that loads the data; `sessions` opens a session on the primary
        (never a replica: a revocation must not wait for replication). `stamp` is the
        change stamp (`vault.stamps`), which every write of the change log moves: while
        it stays put, the revision cannot have moved and is not read again."""
        self._engine = engine
        self._target = target
        self._sessions = sessions
        self._clock = clock
        self._stamp = stamp
        self._checked_at_stamp: int | None = None
        self._loaded: int | None = None
        self._lapse: datetime | None = None
        self._lock = threading.Lock()

    @property
    def engine(self) -> PolicyEngine:
        return self._engine

    @property
    def revision(self) -> str:
        self.follow()
        return self._engine.revision

    def evaluate(self, input: Mapping[str, Any]) -> Decision:
        self.follow()
        return self._engine.evaluate(input)

    def follow(self) -> None:
        """Load the district's data if the database has moved on since it was loaded."""
        now = self._clock()
        lapsed = self._lapse is not None and now >= self._lapse
        # Read before the revision: a change committed in between moves it again.
        stamp = self._stamp() if self._stamp is not None else None
        if stamp is not None and stamp >= 0 and stamp == self._checked_at_stamp and not lapsed:
            return
        with self._sessions() as session:
            current = data_revision(session)
        if current == self._loaded and not lapsed:
            self._checked_at_stamp = stamp
            return
        with self._lock:
            with self._sessions() as session:
                data = district_data(session, now)
            self._target.load_district(data.document)
            self._loaded, self._lapse = data.changes, data.next_lapse
            self._checked_at_stamp = stamp

    def __getattr__(self, name: str) -> Any:
        # What the layers above ask of the engine beyond the protocol (stats, close, ...).
        return getattr(self._engine, name)


def _layers(engine: PolicyEngine) -> list[PolicyEngine]:
    """The engine and each one below it (caches, observers), outermost first."""
    layers = [engine]
    while is_engine(inner := getattr(layers[-1], "engine", None)):
        layers.append(inner)
    return layers


def is_engine(value: object) -> TypeGuard[PolicyEngine]:
    """Whether `value` is an engine, told by its class: `isinstance(_, PolicyEngine)` would
    read the `revision` property, which asks an OPA server (or the database)."""
    return callable(getattr(type(value), "evaluate", None))


def follow_district(
    engine: PolicyEngine, sessions: Sessions, stamp: Callable[[], int] | None = None
) -> PolicyEngine:
    """`engine` following the database's district data: wrapped in a `DistrictEngine`
    unless it already is one, or has no engine underneath that takes district data."""
    layers = _layers(engine)
    if any(isinstance(layer, DistrictEngine) for layer in layers):
        return engine
    target = layers[-1]
    if not callable(getattr(target, "load_district", None)):
        return engine
    return DistrictEngine(engine, target, sessions, stamp=stamp)  # type: ignore[arg-type]
