"""audit decision index: find a decision's entries and its recorded evaluation by id

`GET /v1/decisions/{decision_id}` reads a decision's entries, then the `policy.evaluated`
event that holds the policy's answer; both by id, so neither scans the log.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 08:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Expand/contract (docs/postgresql.md): 0001-0010 predate the rule and are grandfathered.
phase: str = "expand"


def upgrade() -> None:
    # Plain CREATE INDEX: on PostgreSQL the partitioned parent creates it on each partition.
    op.create_index(op.f("ix_audit_entries_decision_id"), "audit_entries", ["decision_id"])
    op.create_index(op.f("ix_audit_entries_evaluation_id"), "audit_entries", ["evaluation_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_audit_entries_evaluation_id"), table_name="audit_entries")
    op.drop_index(op.f("ix_audit_entries_decision_id"), table_name="audit_entries")
