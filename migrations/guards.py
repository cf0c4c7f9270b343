"""What migrations share to change an append-only audit table (migrations 0002 made the
guards: on SQLite a trigger per table and event, on PostgreSQL one trigger per table)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from alembic import context, op


def sqlite_guard(table: str, event: str) -> str:
    """The SQLite trigger that refuses `event` (UPDATE or DELETE) on `table`."""
    return (
        f"CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event.upper()} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
    )


@contextmanager
def guard_lifted(table: str, event: str) -> Iterator[None]:
    """Within the block, `event` on the append-only `table` is allowed: on SQLite its
    trigger is dropped and made again after; on PostgreSQL the table's guard is disabled
    in the migration's transaction, where no other session sees it lifted."""
    if context.get_context().dialect.name == "sqlite":
        op.execute(f"DROP TRIGGER {table}_no_{event.lower()}")
        yield
        op.execute(sqlite_guard(table, event))
    else:
        op.execute(f"ALTER TABLE {table} DISABLE TRIGGER {table}_append_only")
        yield
        op.execute(f"ALTER TABLE {table} ENABLE TRIGGER {table}_append_only")
