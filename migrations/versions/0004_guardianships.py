"""guardianships

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 16:25:25.494700
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Expand/contract (docs/postgresql.md): 0001-0010 predate the rule and are grandfathered.
phase: str = "expand"


def upgrade() -> None:

    op.create_table(
        "guardianships",
        sa.Column("guardian_id", sa.String(length=32), nullable=False),
        sa.Column("ward_id", sa.String(length=32), nullable=False),
        sa.Column("basis", sa.String(length=32), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["guardian_id"], ["residents.id"], name=op.f("fk_guardianships_guardian_id_residents")
        ),
        sa.ForeignKeyConstraint(
            ["ward_id"], ["residents.id"], name=op.f("fk_guardianships_ward_id_residents")
        ),
        sa.PrimaryKeyConstraint("guardian_id", "ward_id", name=op.f("pk_guardianships")),
    )
    with op.batch_alter_table("guardianships", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_guardianships_ward_id"), ["ward_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("guardianships", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_guardianships_ward_id"))

    op.drop_table("guardianships")
