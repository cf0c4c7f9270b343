"""audit archives: one row per monthly partition detached from audit_entries to a file

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 17:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Expand: a new table; older code never reads it (its verify would report archived
# entries as removed, which is why `audit partitions detach` needs this code or newer).
phase: str = "expand"


def upgrade() -> None:
    op.create_table(
        "audit_archives",
        sa.Column("partition", sa.String(length=63), nullable=False),
        sa.Column("from_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("to_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("entries", sa.BigInteger(), nullable=False),
        sa.Column("manifest", sa.Text(), nullable=False),
        sa.Column("file_sha256", sa.String(length=64), nullable=False),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("partition", name=op.f("pk_audit_archives")),
    )
    # Append-only like the log it describes: a removed row would turn archived entries
    # into removed ones, which verification reports.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE TRIGGER audit_archives_append_only BEFORE UPDATE OR DELETE ON audit_archives "
            "FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()"
        )
        op.execute(
            "CREATE TRIGGER audit_archives_no_truncate BEFORE TRUNCATE ON audit_archives "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()"
        )
        op.execute("REVOKE UPDATE, DELETE, TRUNCATE ON audit_archives FROM PUBLIC")
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_archives_no_{event.lower()} BEFORE {event} ON "
                "audit_archives BEGIN SELECT RAISE(ABORT, 'audit_archives is append-only'); END"
            )


def downgrade() -> None:
    op.drop_table("audit_archives")
