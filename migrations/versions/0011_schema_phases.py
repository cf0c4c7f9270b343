"""schema phases: each applied migration's expand/contract phase, so code older than the
schema can tell whether it still runs on it (docs/postgresql.md)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 10:45:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# "expand" (the code before this migration still runs on the new schema) or "contract"
# (only after every node runs code that no longer needs what it removes): docs/postgresql.md
phase: str = "expand"


def upgrade() -> None:
    op.create_table(
        "schema_phases",
        sa.Column("revision", sa.String(length=64), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("revision", name=op.f("pk_schema_phases")),
    )


def downgrade() -> None:
    op.drop_table("schema_phases")
