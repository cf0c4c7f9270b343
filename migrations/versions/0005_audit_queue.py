"""audit queue: an outbox of entries awaiting integration, so batches cost O(batch)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 16:48:14.775031
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Expand/contract (docs/postgresql.md): 0001-0010 predate the rule and are grandfathered.
phase: str = "expand"


def upgrade() -> None:
    op.create_table(
        "audit_queue",
        sa.Column("entry_id", sa.String(length=40), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("entry_id", name=op.f("pk_audit_queue")),
    )
    with op.batch_alter_table("audit_queue", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audit_queue_recorded_at"), ["recorded_at"], unique=False
        )
    # Entries recorded before this migration and not yet integrated join the queue.
    op.execute(
        "INSERT INTO audit_queue (entry_id, recorded_at) "
        "SELECT e.entry_id, e.recorded_at FROM audit_entries e "
        "LEFT JOIN audit_leaves l ON l.entry_id = e.entry_id WHERE l.leaf_index IS NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("audit_queue", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_queue_recorded_at"))

    op.drop_table("audit_queue")
