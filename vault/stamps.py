"""One change stamp for everything the hot path caches: token state, subjects with their
organisation scope, suspensions and the district's policy data.

Database triggers (migration 0018) add one to `change_stamps.counter` in the very
transaction that writes any table those caches read (`WATCHED`). The stamp therefore
becomes visible exactly when the change commits, on every node sharing the database, and
whatever writes the table (a command, the admin API, the detector, plain SQL) moves it.

A request reads the stamp once (one primary-key read) before anything else, and every
cached answer it uses must have been loaded under that same stamp; anything else is read
afresh. Since the state is always read after the stamp, an entry can only be newer than
its tag, never older: a revocation, a suspension or a mandate change still takes effect on
the next request.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy import BigInteger, Engine, String
from sqlalchemy.orm import Mapped, mapped_column

from vault.models import Base

STAMP_NAME = "access"

# Every table a cached answer is built from. A new cache must add the tables it reads here
# (and a migration creating their triggers): tests/test_stamps.py checks each one moves it.
WATCHED = (
    "oauth_users",
    "oauth_clients",
    "oauth_token_families",
    "oauth_revoked_access_tokens",
    "organisations",
    "organisation_communities",
    "organisation_buildings",
    "suspensions",
    "policy_data_changes",
)


class ChangeStamp(Base):
    __tablename__ = "change_stamps"

    name: Mapped[str] = mapped_column(String(16), primary_key=True)
    counter: Mapped[int] = mapped_column(BigInteger)


_BUMP = "UPDATE change_stamps SET counter = counter + 1 WHERE name = 'access'"


def trigger_statements(dialect: str, tables: tuple[str, ...] = WATCHED) -> list[str]:
    """DDL for the triggers that move the stamp on every write of `tables`."""
    if dialect == "postgresql":
        statements = [
            "CREATE OR REPLACE FUNCTION bump_change_stamp() RETURNS trigger "
            f"LANGUAGE plpgsql AS $$ BEGIN {_BUMP}; RETURN NULL; END $$"
        ]
        statements += [
            f"CREATE TRIGGER {table}_change_stamp AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
            f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION bump_change_stamp()"
            for table in tables
        ]
        return statements
    return [
        f"CREATE TRIGGER {table}_change_stamp_{op.lower()} AFTER {op} ON {table} BEGIN {_BUMP}; END"
        for table in tables
        for op in ("INSERT", "UPDATE", "DELETE")
    ]


def drop_trigger_statements(dialect: str, tables: tuple[str, ...] = WATCHED) -> list[str]:
    if dialect == "postgresql":
        return [f"DROP TRIGGER IF EXISTS {t}_change_stamp ON {t}" for t in tables] + [
            "DROP FUNCTION IF EXISTS bump_change_stamp()"
        ]
    return [
        f"DROP TRIGGER IF EXISTS {t}_change_stamp_{op}"
        for t in tables
        for op in ("insert", "update", "delete")
    ]


@dataclass
class _Memo:
    value: int | None = None


# The stamp a request has read, shared by the threads its work runs on (a context is
# copied into each threadpool call, and the memo object with it).
_request_memo: ContextVar[_Memo | None] = ContextVar("change_stamp_memo", default=None)


@contextmanager
def one_stamp_per_request() -> Iterator[None]:
    """Within this block (one request), the stamp is read from the database at most once."""
    token = _request_memo.set(_Memo())
    try:
        yield
    finally:
        _request_memo.reset(token)


# The DBAPI statement: no parameters, so no paramstyle to render per driver.
_READ_STAMP_SQL = f"SELECT counter FROM {ChangeStamp.__tablename__} WHERE name = '{STAMP_NAME}'"  # noqa: S608 - constants


def read_stamp_from(engine: Engine) -> int:
    """The current stamp (-1 for a schema without the table's row: nothing is cached).

    On a pooled DBAPI connection: every request reads the stamp, and a session (or even a
    Core connection) costs several times the read itself."""
    connection = engine.raw_connection()
    # On PostgreSQL, outside a transaction: one round trip, not BEGIN, SELECT and ROLLBACK.
    # (SQLite's driver begins none for a SELECT.)
    outside = engine.dialect.name == "postgresql"
    try:
        if outside:
            connection.driver_connection.autocommit = True  # type: ignore[union-attr]
        cursor = connection.cursor()
        try:
            cursor.execute(_READ_STAMP_SQL)
            row = cursor.fetchone()
        finally:
            cursor.close()
            if outside:
                connection.driver_connection.autocommit = False  # type: ignore[union-attr]
    finally:
        connection.close()  # back to the pool
    return -1 if row is None or row[0] is None else int(row[0])


class Stamps:
    """The stamp as this request sees it."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def current(self) -> int:
        memo = _request_memo.get()
        if memo is not None and memo.value is not None:
            return memo.value
        value = read_stamp_from(self._engine)
        if memo is not None:
            memo.value = value
        return value


K = TypeVar("K")
V = TypeVar("V")


class StampedCache(Generic[K, V]):
    """A bounded LRU map whose entries count only under the stamp they were loaded at."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._entries: OrderedDict[K, tuple[int, V]] = OrderedDict()
        self._lock = threading.Lock()

    def _found(self, key: K, stamp: int) -> tuple[int, V] | None:
        if stamp < 0:
            return None
        with self._lock:
            found = self._entries.get(key)
            if found is None or found[0] != stamp:
                return None
            self._entries.move_to_end(key)
            return found

    def put(self, key: K, stamp: int, value: V) -> None:
        if stamp < 0:
            return
        with self._lock:
            self._entries[key] = (stamp, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def lookup(
        self,
        key: K,
        stamp: int,
        load: Callable[[], V],
        keep: Callable[[V], bool] = lambda _: True,
    ) -> V:
        """The entry for `key` under `stamp`, loading it when there is none (and keeping
        it, unless `keep` says the value must not be cached)."""
        found = self._found(key, stamp)
        if found is not None:
            return found[1]
        value = load()
        if keep(value):
            self.put(key, stamp, value)
        return value
