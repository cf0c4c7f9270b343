"""statistics tokens stored once: the (field, epoch, token) index is dropped, and on
SQLite the rows live in their primary key's b-tree (WITHOUT ROWID) (a contract, issue 20)

Counting probes each resident's token by (resident, field), and key rotation walks that
key: the extra index was a third copy of every token that no query used. On SQLite a
rowid table kept the key twice as well (table and its primary-key index). Nothing is
lost: the rows are copied as they are.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07 14:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import context, op

revision: str = "0023"
down_revision: str | Sequence[str] | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Contract: it drops an index (the code before this release ran with it, not on it).
phase: str = "contract"

_INDEX = "ix_resident_stat_tokens_grouping"


def _sqlite_rebuild(without_rowid: bool) -> None:
    """The table copied into one of the other layout, with its names kept."""
    suffix = " WITHOUT ROWID" if without_rowid else ""
    op.execute(
        "CREATE TABLE resident_stat_tokens_new ("
        "resident_id VARCHAR(32) NOT NULL, field VARCHAR(64) NOT NULL, "
        "epoch VARCHAR(64) NOT NULL, token BLOB NOT NULL, "
        "CONSTRAINT pk_resident_stat_tokens PRIMARY KEY (resident_id, field), "
        "CONSTRAINT fk_resident_stat_tokens_resident_id_residents FOREIGN KEY(resident_id) "
        f"REFERENCES residents (id)){suffix}"
    )
    op.execute(
        "INSERT INTO resident_stat_tokens_new (resident_id, field, epoch, token) "
        "SELECT resident_id, field, epoch, token FROM resident_stat_tokens"
    )
    op.execute("DROP TABLE resident_stat_tokens")
    op.execute("ALTER TABLE resident_stat_tokens_new RENAME TO resident_stat_tokens")


def upgrade() -> None:
    if context.get_context().dialect.name == "sqlite":
        _sqlite_rebuild(without_rowid=True)  # the index goes with the old table
    else:
        op.drop_index(_INDEX, table_name="resident_stat_tokens")


def downgrade() -> None:
    if context.get_context().dialect.name == "sqlite":
        _sqlite_rebuild(without_rowid=False)
    op.create_index(_INDEX, "resident_stat_tokens", ["field", "epoch", "token"])
