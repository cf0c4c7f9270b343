"""Residents' data keys: creation, unwrapping through the keyring, and a bounded cache.

Unwrapping costs a keyring call (85 µs on an HSM, see NOTES.md); a bulk export of 10⁵
residents would spend seconds on it alone, so unwrapped keys stay in memory for a short
time, in a bounded LRU, as every KMS-backed vault does. Erasure and rotation evict.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.crypto import DataKey, Suite, data_key_context, new_key
from vault.errors import ResidentErased
from vault.interfaces import Keyring
from vault.models import DataKeyRecord, utcnow


class DataKeyCache:
    """Bounded, time-limited LRU of unwrapped data keys, keyed by (resident, version)."""

    def __init__(self, max_entries: int = 10_000, ttl_seconds: float = 60.0) -> None:
        self._max = max_entries
        self._ttl = ttl_seconds
        self._entries: OrderedDict[tuple[str, int], tuple[float, DataKey]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, resident_id: str, version: int) -> DataKey | None:
        if self._max == 0:
            return None
        with self._lock:
            item = self._entries.get((resident_id, version))
            if item is None:
                return None
            expires, key = item
            if expires < time.monotonic():
                del self._entries[(resident_id, version)]
                return None
            self._entries.move_to_end((resident_id, version))
            return key

    def put(self, key: DataKey) -> None:
        if self._max == 0:
            return
        with self._lock:
            self._entries[(key.resident_id, key.version)] = (time.monotonic() + self._ttl, key)
            self._entries.move_to_end((key.resident_id, key.version))
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def evict(self, resident_id: str) -> None:
        with self._lock:
            for cached in [k for k in self._entries if k[0] == resident_id]:
                del self._entries[cached]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class DataKeys:
    """Creates, wraps and unwraps residents' data keys."""

    def __init__(self, keyring: Keyring, cache: DataKeyCache | None = None) -> None:
        self.keyring = keyring
        self.cache = cache if cache is not None else DataKeyCache()

    def new(self, resident_id: str, version: int) -> tuple[DataKey, dict[str, Any]]:
        """A fresh data key and the row (wrapped) that stores it, for a bulk insert."""
        suite = self.keyring.suite
        key = DataKey(resident_id, version, suite, new_key(suite))
        kek_id, wrapped = self.keyring.wrap(key.key, data_key_context(resident_id, version))
        self.cache.put(key)
        row = {
            "resident_id": resident_id,
            "version": version,
            "suite": suite.value,
            "kek_id": kek_id,
            "wrapped": wrapped,
            "created_at": utcnow(),
        }
        return key, row

    def create(self, session: Session, resident_id: str, version: int) -> DataKey:
        key, row = self.new(resident_id, version)
        session.add(DataKeyRecord(**row))
        return key

    def unwrap(self, record: DataKeyRecord) -> DataKey:
        return self.unwrap_stored(
            record.resident_id, record.version, record.suite, record.kek_id, record.wrapped
        )

    def unwrap_stored(
        self, resident_id: str, version: int, suite: str, kek_id: str, wrapped: bytes
    ) -> DataKey:
        """The data key of a stored row's columns (from the cache when it is there)."""
        cached = self.cache.get(resident_id, version)
        if cached is not None:
            return cached
        raw = self.keyring.unwrap(kek_id, wrapped, data_key_context(resident_id, version))
        key = DataKey(resident_id, version, Suite(suite), raw)
        self.cache.put(key)
        return key

    def get(self, session: Session, resident_id: str, version: int) -> DataKey:
        cached = self.cache.get(resident_id, version)
        if cached is not None:
            return cached
        record = session.get(DataKeyRecord, (resident_id, version))
        if record is None:
            raise ResidentErased(resident_id)
        return self.unwrap(record)

    def get_many(
        self, session: Session, wanted: Iterable[tuple[str, int]]
    ) -> dict[tuple[str, int], DataKey]:
        """Fetch many data keys with one query for those not in the cache."""
        found: dict[tuple[str, int], DataKey] = {}
        missing: set[tuple[str, int]] = set()
        for resident_id, version in wanted:
            cached = self.cache.get(resident_id, version)
            if cached is None:
                missing.add((resident_id, version))
            else:
                found[(resident_id, version)] = cached
        if missing:
            ids = sorted({resident_id for resident_id, _ in missing})
            for chunk_start in range(0, len(ids), 500):
                chunk = ids[chunk_start : chunk_start + 500]
                rows = session.scalars(
                    select(DataKeyRecord).where(DataKeyRecord.resident_id.in_(chunk))
                )
                for record in rows:
                    if (record.resident_id, record.version) in missing:
                        found[(record.resident_id, record.version)] = self.unwrap(record)
        return found
