"""Decisions cached per (subject, purpose, action, target, fields, policy revision).

A decision never depends on the record, so one evaluation serves every request of the
same caller, purpose and action until the policy or its data change. The key holds
exactly what the policy reads (the subject as canonical JSON, purpose, action, target and
the fields' names, categories, sensitivity and rules), under the revision: a new revision
empties the cache at once. A hit returns the stored decision, still carrying the id of
the evaluation that made it (the gate's audit entry names it), with `from_cache` set.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from policies.bundle import canonical_json
from policies.interfaces import Decision, PolicyEngine

__all__ = ["FIELD_METADATA_READ", "CacheKey", "CacheStats", "CachedEngine", "cache_key"]

# see cache_key
FIELD_METADATA_READ = ("name", "category", "sensitive", "linkable", "mask", "generalise")
"""The field metadata the policy reads; only these belong to the key. Labels and enum
values are long and change no decision (a property test holds the policy to this)."""

CacheKey = tuple[Hashable, ...]


def cache_key(input: Mapping[str, Any]) -> CacheKey | None:
    """What a decision depends on (the revision is kept apart); None for an input that is
    not JSON-like, which the engine will refuse.

    The field metadata belongs to the key: another field list, or a field whose catalogue
    entry changed (say it became sensitive), is another decision under the same revision.
    Non-string purposes, actions, targets, categories and rules count as absent, exactly
    as the policy treats them, and `sensitive` only as whether it is `true`.
    """
    try:
        fields = tuple(
            (
                field.get("name"),
                _text(field.get("category")),
                field.get("sensitive") is True,
                field.get("linkable") is True,
                _text(field.get("mask")),
                _levels(field.get("generalise")),
            )
            for field in input.get("fields") or ()
        )
        key = (
            canonical_json(input.get("subject")),
            _text(input.get("purpose")),
            _text(input.get("action")),
            _text(input.get("target")),
            fields,
        )
        hash(key)
    except (TypeError, ValueError, AttributeError):
        return None
    return key


def _levels(value: object) -> tuple[str, ...]:
    """Generalisation level names as the policy reads them: the strings of a list."""
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    entries: int
    max_entries: int
    invalidations: int
    revision: str | None


class CachedEngine:
    """A `PolicyEngine` in front of another, with a bounded LRU of decisions. Thread-safe."""

    def __init__(self, engine: PolicyEngine, max_entries: int = 4096) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._engine = engine
        self._max_entries = max_entries
        self._entries: OrderedDict[CacheKey, Decision] = OrderedDict()
        self._revision: str | None = None
        self._lock = threading.Lock()
        self._hits = self._misses = self._invalidations = 0

    @property
    def revision(self) -> str:
        return self._engine.revision

    @property
    def engine(self) -> PolicyEngine:
        return self._engine

    def evaluate(self, input: Mapping[str, Any]) -> Decision:
        revision = self._engine.revision
        key = cache_key(input)
        if key is None:
            return self._engine.evaluate(input)
        with self._lock:
            self._follow(revision)
            cached = self._entries.get(key)
            if cached is not None:
                self._entries.move_to_end(key)
                self._hits += 1
                return replace(cached, from_cache=True)
            self._misses += 1
        # Evaluate outside the lock: a slow engine must not serialise every caller.
        decision = self._engine.evaluate(input)
        with self._lock:
            # Kept only if the revision did not move meanwhile; otherwise the next call
            # reads the new revision, empties the cache and evaluates afresh.
            if decision.revision == revision == self._revision:
                self._entries[key] = decision
                self._entries.move_to_end(key)
                while len(self._entries) > self._max_entries:
                    self._entries.popitem(last=False)
        return decision

    def _follow(self, revision: str) -> None:
        """Empty the cache when the engine moved to another revision (lock held)."""
        if revision != self._revision:
            if self._entries:
                self._invalidations += 1
            self._entries.clear()
            self._revision = revision

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                entries=len(self._entries),
                max_entries=self._max_entries,
                invalidations=self._invalidations,
                revision=self._revision,
            )
