"""lookup rows stored once: the statistics tokens' (field, epoch, token) index is dropped,
and on SQLite the tokens and the blind indexes live in their primary key's b-tree
(WITHOUT ROWID) (a contract, issue 20)

Counting probes each resident's token by (resident, field), and key rotation walks that
key: the extra index was a third copy of every token that no query used. On SQLite a
rowid table kept each key twice as well (the table and its primary-key index). Nothing is
lost: the rows are copied as they are, and the other indexes are made again.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-07 14:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0025"
down_revision: str | Sequence[str] | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Contract: it drops an index (the code before this release ran with it, not on it).
phase: str = "contract"

_TOKENS_INDEX = "ix_resident_stat_tokens_grouping"
_CLUSTERED = ("resident_stat_tokens", "blind_indexes")


def _sqlite_rebuild(table: str, *, without_rowid: bool, keep: set[str] | None = None) -> None:
    """`table` copied into the other layout: its own CREATE statement (names and
    constraints kept) with WITHOUT ROWID added or taken away, then its indexes in `keep`
    (all when None) made again."""
    bind = op.get_bind()
    created = bind.execute(
        sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :t"), {"t": table}
    ).scalar_one()
    indexes = [
        (name, sql)
        for name, sql in bind.execute(
            sa.text(
                "SELECT name, sql FROM sqlite_master"
                " WHERE type = 'index' AND tbl_name = :t AND sql IS NOT NULL"
            ),
            {"t": table},
        )
        if keep is None or name in keep
    ]
    body = created.strip().removesuffix("WITHOUT ROWID").rstrip()
    _, columns = body.split("(", 1)
    suffix = " WITHOUT ROWID" if without_rowid else ""
    op.execute(f"CREATE TABLE {table}_new ({columns}{suffix}")
    op.execute(f"INSERT INTO {table}_new SELECT * FROM {table}")  # noqa: S608 - our names
    op.execute(f"DROP TABLE {table}")
    op.execute(f"ALTER TABLE {table}_new RENAME TO {table}")
    for _, sql in indexes:
        op.execute(sql)


def upgrade() -> None:
    if context.get_context().dialect.name == "sqlite":
        _sqlite_rebuild("resident_stat_tokens", without_rowid=True, keep=set())
        _sqlite_rebuild("blind_indexes", without_rowid=True)
    else:
        op.drop_index(_TOKENS_INDEX, table_name="resident_stat_tokens")


def downgrade() -> None:
    if context.get_context().dialect.name == "sqlite":
        for table in _CLUSTERED:
            _sqlite_rebuild(table, without_rowid=False)
    op.create_index(_TOKENS_INDEX, "resident_stat_tokens", ["field", "epoch", "token"])
