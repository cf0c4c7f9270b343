"""correction requests: the community's queue of residents' requests to correct their record

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 08:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Expand/contract (docs/postgresql.md): 0001-0010 predate the rule and are grandfathered.
phase: str = "expand"


def upgrade() -> None:
    op.create_table(
        "correction_requests",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("resident_id", sa.String(length=32), nullable=False),
        sa.Column("community_id", sa.String(length=32), nullable=False),
        sa.Column("field", sa.String(length=64), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("requested_by", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["community_id"],
            ["communities.id"],
            name=op.f("fk_correction_requests_community_id_communities"),
        ),
        sa.ForeignKeyConstraint(
            ["resident_id"],
            ["residents.id"],
            name=op.f("fk_correction_requests_resident_id_residents"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_correction_requests")),
    )
    with op.batch_alter_table("correction_requests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_correction_requests_community_id"), ["community_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_correction_requests_resident_id"), ["resident_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_correction_requests_status"), ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("correction_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_correction_requests_status"))
        batch_op.drop_index(batch_op.f("ix_correction_requests_resident_id"))
        batch_op.drop_index(batch_op.f("ix_correction_requests_community_id"))
    op.drop_table("correction_requests")
