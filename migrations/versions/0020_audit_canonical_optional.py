"""entries' canonical bytes no longer written: the column may be NULL (issue 20)

The bytes an entry's leaf hashes are made from its columns (audit/encoding.py); the code
from this release computes them instead of storing them. 0021 drops the column.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 12:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0020"
down_revision: str | Sequence[str] | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Expand: the older code still writes the bytes, and reads only those it wrote.
phase: str = "expand"

_GUARDS = tuple(
    f"CREATE TRIGGER audit_entries_no_{event.lower()} BEFORE {event} ON audit_entries "
    f"BEGIN SELECT RAISE(ABORT, 'audit_entries is append-only'); END"
    for event in ("UPDATE", "DELETE")
)


def _nullable(nullable: bool) -> None:
    if context.get_context().dialect.name == "postgresql":
        # Metadata only, on the partitioned table and every partition.
        op.alter_column(
            "audit_entries", "canonical", existing_type=sa.LargeBinary(), nullable=nullable
        )
        return
    # SQLite cannot alter a column: the table is copied, and its append-only guards with it.
    for event in ("update", "delete"):
        op.execute(f"DROP TRIGGER IF EXISTS audit_entries_no_{event}")
    with op.batch_alter_table("audit_entries", recreate="always") as batch:
        batch.alter_column("canonical", existing_type=sa.LargeBinary(), nullable=nullable)
    for statement in _GUARDS:
        op.execute(statement)


def upgrade() -> None:
    _nullable(True)


def downgrade() -> None:
    _nullable(False)
