"""export plans: a fingerprinted export's rows, in its keyed order, kept in the database
while it streams, not in the serving process's memory (issue 20)

An export's order is a keyed hash of each row's id, so the whole scope was planned and
sorted in memory before the first row went out: about 540 B a row, half a gigabyte at
10^6. The plan is now written here in chunks and read back a batch at a time, by its key.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 17:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from vault.models import TZDateTime

revision: str = "0022"
down_revision: str | Sequence[str] | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Expand: new tables; older code plans in memory and never reads them.
phase: str = "expand"


def upgrade() -> None:
    op.create_table(
        "export_plans",
        sa.Column("export_id", sa.String(length=40), nullable=False),
        sa.Column("planned_at", TZDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("export_id", name=op.f("pk_export_plans")),
    )
    op.create_index(op.f("ix_export_plans_planned_at"), "export_plans", ["planned_at"])
    op.create_table(
        "export_plan_rows",
        sa.Column("export_id", sa.String(length=40), nullable=False),
        sa.Column("sort_key", sa.LargeBinary(length=8), nullable=False),
        sa.Column("resident_id", sa.String(length=32), nullable=False),
        sa.Column("decoy", sa.Boolean(), nullable=False),
        sa.Column("consent_rank", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint(
            "export_id", "sort_key", "resident_id", name=op.f("pk_export_plan_rows")
        ),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("export_plan_rows")
    op.drop_index(op.f("ix_export_plans_planned_at"), table_name="export_plans")
    op.drop_table("export_plans")
