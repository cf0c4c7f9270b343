"""the change stamp the hot path's caches follow (vault/stamps.py, issue 20): one row,
moved by triggers in the transaction of every write to a table the caches read

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 07:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from vault.stamps import STAMP_NAME, drop_trigger_statements, trigger_statements

revision: str = "0018"
down_revision: str | Sequence[str] | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Expand: a new table and triggers; older code neither reads the one nor notices the other.
phase: str = "expand"


def _dialect() -> str:
    return str(context.get_context().dialect.name)


def upgrade() -> None:
    stamps = op.create_table(
        "change_stamps",
        sa.Column("name", sa.String(length=16), nullable=False),
        sa.Column("counter", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_change_stamps")),
    )
    op.bulk_insert(stamps, [{"name": STAMP_NAME, "counter": 1}])
    for statement in trigger_statements(_dialect()):
        op.execute(statement)


def downgrade() -> None:
    for statement in drop_trigger_statements(_dialect()):
        op.execute(statement)
    op.drop_table("change_stamps")
