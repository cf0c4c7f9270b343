"""the Merkle tree keeps one level in four, and leaves no integration time (a contract,
issue 20)

`audit_tree_nodes` held every level above the leaves: about one 32-byte hash (and a row's
overhead) per entry, 44 B an entry on SQLite and 119 B on PostgreSQL, for nodes that are
hashes of the nodes below them. The code of this release folds any node from the levels
that are multiples of `audit.merkle.STRATUM` (at most 8 stored nodes each), and writes
every level until this migration has run. Before deleting a level, each of its nodes is
checked against the two nodes below it: a difference means the tree was changed behind the
log, and the migration refuses, naming the nodes, so the evidence is kept.

It also drops `audit_leaves.integrated_at`, which nothing read (this release writes it until
then), and on SQLite copies `audit_leaves` once with `leaf_index INTEGER`: a BIGINT primary
key kept every index twice, as the table's rowid and in an index of its own.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-08 09:00:00.000000
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import sqlalchemy as sa
from alembic import context, op
from alembic.util import CommandError

from audit.merkle import node_hash
from migrations.guards import guard_lifted, sqlite_guard
from vault.i18n import negotiate, text
from vault.models import TZDateTime

revision: str = "0026"
down_revision: str | Sequence[str] | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Contract: the code before this release reads every level from audit_tree_nodes, and
# writes each leaf's integration time.
phase: str = "contract"

_CHUNK = 50_000  # nodes of one level checked or made per round trip
# The levels kept: those `audit.merkle.STRATUM` names when this was written (a test holds
# them equal); written out so that this migration does the same whatever the code does.
_KEPT_EVERY = 4


def _kept(level: int) -> bool:
    return level % _KEPT_EVERY == 0


def _stored(level: int, first: int, last: int) -> dict[int, bytes]:
    """The stored hashes of `level` from index `first` to `last`, by index (level 0: the
    leaves)."""
    if level == 0:
        statement = sa.text(
            "SELECT leaf_index, leaf_hash FROM audit_leaves WHERE leaf_index BETWEEN :a AND :b"
        )
    else:
        statement = sa.text(
            'SELECT "index", hash FROM audit_tree_nodes'
            ' WHERE level = :l AND "index" BETWEEN :a AND :b'
        )
    rows = op.get_bind().execute(statement, {"l": level, "a": first, "b": last})
    return {int(i): bytes(h) for i, h in rows}


def _levels_above_leaves() -> Iterator[tuple[int, int, int]]:
    """(level, first index, last index) of each chunk of each complete level above 0,
    lowest first: a level of a tree of n leaves has n >> level nodes."""
    size = op.get_bind().execute(sa.text("SELECT max(leaf_index) + 1 FROM audit_leaves")).scalar()
    level = 1
    while size and size >> level:
        count = size >> level
        for first in range(0, count, _CHUNK):
            yield level, first, min(first + _CHUNK, count) - 1
        level += 1


def _folded(level: int, first: int, last: int) -> dict[int, bytes]:
    """The nodes of `level` from `first` to `last` that the level below makes, by index
    (a node whose children are not both stored is left out)."""
    below = _stored(level - 1, 2 * first, 2 * last + 1)
    return {
        i: node_hash(below[2 * i], below[2 * i + 1])
        for i in range(first, last + 1)
        if 2 * i in below and 2 * i + 1 in below
    }


def _altered() -> list[str]:
    """Stored nodes between the kept levels that differ from the two below (up to 20)."""
    found: list[str] = []
    for level, first, last in _levels_above_leaves():
        if _kept(level):
            continue
        stored = _stored(level, first, last)
        for index, made in _folded(level, first, last).items():
            if stored.get(index) != made:
                found.append(f"({level}, {index})")
                if len(found) == 20:
                    return found
    return found


def _sqlite_leaves(index_type: str, time_column: str, time_value: str) -> None:
    """audit_leaves copied in another shape with its guards: the same rows, constraint
    names and order."""
    for event in ("update", "delete"):
        op.execute(f"DROP TRIGGER IF EXISTS audit_leaves_no_{event}")
    op.execute(
        "CREATE TABLE audit_leaves_new ("
        f" leaf_index {index_type} NOT NULL,"
        " entry_id VARCHAR(40) NOT NULL,"
        f" leaf_hash BLOB NOT NULL,{time_column}"
        " CONSTRAINT pk_audit_leaves PRIMARY KEY (leaf_index),"
        " CONSTRAINT uq_audit_leaves_entry_id UNIQUE (entry_id))"
    )
    time_target = ", integrated_at" if time_column else ""
    op.execute(
        f"INSERT INTO audit_leaves_new (leaf_index, entry_id, leaf_hash{time_target})"  # noqa: S608
        f" SELECT leaf_index, entry_id, leaf_hash{time_value} FROM audit_leaves"
        " ORDER BY leaf_index"
    )
    op.execute("DROP TABLE audit_leaves")
    op.execute("ALTER TABLE audit_leaves_new RENAME TO audit_leaves")
    for event in ("UPDATE", "DELETE"):
        op.execute(sqlite_guard("audit_leaves", event))


def upgrade() -> None:
    if not context.is_offline_mode():  # the DBA reviewing `--sql` checks with `audit verify`
        altered = _altered()
        if altered:
            lang = negotiate(None, os.environ.get("VAULT_LANG"))
            raise CommandError(text("db.audit.nodes-altered", lang, nodes=", ".join(altered)))
    with guard_lifted("audit_tree_nodes", "DELETE"):
        op.execute(f"DELETE FROM audit_tree_nodes WHERE level % {_KEPT_EVERY} <> 0")  # noqa: S608
    if context.get_context().dialect.name == "sqlite":
        _sqlite_leaves("INTEGER", "", "")
    else:
        op.drop_column("audit_leaves", "integrated_at")


# The older code's column is NOT NULL, and its time is gone: each leaf gets its entry's
# recording time, the last time known before its integration (the downgrade's own time
# when the entry is archived).
_RECORDED = (
    "coalesce((SELECT e.recorded_at FROM audit_entries e"
    " WHERE e.entry_id = audit_leaves.entry_id), {now})"
)


def downgrade() -> None:
    if context.get_context().dialect.name == "sqlite":
        # TZDateTime's text on SQLite: microseconds (%f gives milliseconds).
        recorded = _RECORDED.format(now="strftime('%Y-%m-%d %H:%M:%f000', 'now')")
        _sqlite_leaves("BIGINT", " integrated_at DATETIME NOT NULL,", f", {recorded}")
    else:
        op.add_column("audit_leaves", sa.Column("integrated_at", TZDateTime(), nullable=True))
        with guard_lifted("audit_leaves", "UPDATE"):
            op.execute(f"UPDATE audit_leaves SET integrated_at = {_RECORDED.format(now='now()')}")  # noqa: S608
        op.alter_column("audit_leaves", "integrated_at", existing_type=TZDateTime(), nullable=False)
    # The older code reads every level: the ones between made again from those kept,
    # lowest first, so each is made from a level already complete.
    insert = sa.text('INSERT INTO audit_tree_nodes (level, "index", hash) VALUES (:l, :i, :h)')
    for level, first, last in _levels_above_leaves():
        if _kept(level):
            continue
        made = _folded(level, first, last)
        op.get_bind().execute(insert, [{"l": level, "i": i, "h": h} for i, h in made.items()])
