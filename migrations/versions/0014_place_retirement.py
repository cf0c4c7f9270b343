"""places and organisations can be retired: streets, communities, grids, buildings and
organisations get a nullable retired_at (vault/places.py, issue 19)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 00:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Expand: nullable columns; older code never reads them, and nothing is retired yet.
phase: str = "expand"

TABLES = ("streets", "communities", "grids", "buildings", "organisations")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("retired_at")
