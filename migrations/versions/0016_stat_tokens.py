"""statistics tokens: resident_stat_tokens holds a keyed token of each statistics field's
category, so a statistics table is a SQL GROUP BY instead of a decryption per resident
(vault/stat_tokens.py, issue 20); stat_token_fields says which fields' tokens are complete

A vault that already has residents has no tokens yet: its fields start incomplete (the
statistics service decrypts for them, as before) until `resident-vault stats backfill`
has filled them. An empty vault's fields are complete at once.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-08 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Expand: two new tables; older code neither reads nor writes them (and a row it writes
# meanwhile without a token is what the backfill is for).
phase: str = "expand"

# The fields the catalogue marked `stat_token` at this revision; a field marked later has
# no row, so it counts as incomplete until a backfill.
FIELDS = ("disability", "low_income_status", "elderly_living_alone")


def upgrade() -> None:
    op.create_table(
        "resident_stat_tokens",
        sa.Column("resident_id", sa.String(length=32), nullable=False),
        sa.Column("field", sa.String(length=64), nullable=False),
        sa.Column("epoch", sa.String(length=64), nullable=False),
        sa.Column("token", sa.LargeBinary(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["resident_id"],
            ["residents.id"],
            name=op.f("fk_resident_stat_tokens_resident_id_residents"),
        ),
        sa.PrimaryKeyConstraint("resident_id", "field", name=op.f("pk_resident_stat_tokens")),
    )
    op.create_index(
        "ix_resident_stat_tokens_grouping", "resident_stat_tokens", ["field", "epoch", "token"]
    )
    op.create_table(
        "stat_token_fields",
        sa.Column("field", sa.String(length=64), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("field", name=op.f("pk_stat_token_fields")),
    )
    # One statement per field that decides in the database, so `--sql` needs no look.
    for field in FIELDS:
        seed = "INSERT INTO stat_token_fields (field, complete) SELECT '{}', NOT EXISTS ({})"
        op.execute(sa.text(seed.format(field, "SELECT 1 FROM residents")))


def downgrade() -> None:
    op.drop_table("stat_token_fields")
    op.drop_index("ix_resident_stat_tokens_grouping", table_name="resident_stat_tokens")
    op.drop_table("resident_stat_tokens")
