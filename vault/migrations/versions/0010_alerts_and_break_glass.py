"""alerts and break-glass: insider-abuse alerts, suspensions pending review, emergency
grants, and what residents are told

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 08:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
# DEVELOPMENT ONLY: follows 0009 once it exists (it is being written alongside).
down_revision: str | Sequence[str] | None = (
    "0009" if any(Path(__file__).parent.glob("0009_*.py")) else "0008"
)
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "break_glass_grants",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user", sa.String(length=128), nullable=False),
        sa.Column("subject_type", sa.String(length=32), nullable=False),
        sa.Column("organisation", sa.String(length=64), nullable=True),
        sa.Column("resident_id", sa.String(length=32), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("justification", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("review_status", sa.String(length=16), nullable=False),
        sa.Column("reviewed_by", sa.String(length=128), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("review_note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["resident_id"], ["residents.id"],
            name=op.f("fk_break_glass_grants_resident_id_residents"),
        ),  # fmt: skip
        sa.PrimaryKeyConstraint("id", name=op.f("pk_break_glass_grants")),
    )
    op.create_index(
        "ix_break_glass_lookup", "break_glass_grants", ["user", "resident_id", "expires_at"]
    )
    op.create_index(
        op.f("ix_break_glass_grants_resident_id"), "break_glass_grants", ["resident_id"]
    )
    op.create_index(
        op.f("ix_break_glass_grants_review_status"), "break_glass_grants", ["review_status"]
    )
    op.create_table(
        "resident_notifications",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("resident_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("text_zh", sa.Text(), nullable=False),
        sa.Column("text_en", sa.Text(), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["resident_id"], ["residents.id"],
            name=op.f("fk_resident_notifications_resident_id_residents"),
        ),  # fmt: skip
        sa.PrimaryKeyConstraint("id", name=op.f("pk_resident_notifications")),
    )
    op.create_index(
        op.f("ix_resident_notifications_resident_id"), "resident_notifications", ["resident_id"]
    )


def downgrade() -> None:
    op.drop_table("resident_notifications")
    op.drop_table("break_glass_grants")
