"""exports: the record of every bulk export, for tracing a leaked file back to it

One row per export: who asked, the request and decision ids, purpose, format, filters,
rows, residents left out, the decoys it included and their keyed marks. No secret and no
personal value is stored (docs/traceable-exports.md).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 08:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Expand/contract (docs/postgresql.md): 0001-0010 predate the rule and are grandfathered.
phase: str = "expand"


def upgrade() -> None:
    op.create_table(
        "exports",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("subject_type", sa.String(length=32), nullable=False),
        sa.Column("organisation", sa.String(length=64), nullable=True),
        sa.Column("client", sa.String(length=64), nullable=True),
        sa.Column("user", sa.String(length=128), nullable=True),
        sa.Column("recipient", sa.String(length=128), nullable=False),
        sa.Column("pseudonymous", sa.Boolean(), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("decision_id", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=True),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("filters", sa.JSON(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("left_out", sa.Integer(), nullable=False),
        sa.Column("decoys", sa.JSON(), nullable=False),
        sa.Column("decoy_marks", sa.JSON(), nullable=False),
        sa.Column("fingerprint_version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exports")),
    )
    with op.batch_alter_table("exports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_exports_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_exports_organisation"), ["organisation"], unique=False)
        batch_op.create_index(batch_op.f("ix_exports_request_id"), ["request_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("exports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_exports_request_id"))
        batch_op.drop_index(batch_op.f("ix_exports_organisation"))
        batch_op.drop_index(batch_op.f("ix_exports_created_at"))
    op.drop_table("exports")
