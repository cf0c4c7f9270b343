"""resident records: one row per resident, a sealed document per sensitivity class and a
compact provenance map (vault/records.py, issue 20); the expand half

The per-field rows of `resident_fields` stay: the code before this revision still reads
and writes them, and this code reads both. `resident-vault db move-records` moves them
(it needs the keyring, so it is a command run between this expand and the contract 0019,
not part of a migration), then 0019 drops the table.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-08 09:00:00.000000
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op
from alembic.util import CommandError

from vault.i18n import negotiate, text

revision: str = "0017"
# 0016 (another branch) goes in between when both are merged.
down_revision: str | Sequence[str] | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Expand: a new table; older code never reads it.
phase: str = "expand"


def upgrade() -> None:
    op.create_table(
        "resident_records",
        sa.Column("resident_id", sa.String(length=32), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("doc_l1", sa.LargeBinary(), nullable=True),
        sa.Column("doc_l2", sa.LargeBinary(), nullable=True),
        sa.Column("doc_l3", sa.LargeBinary(), nullable=True),
        sa.Column("doc_l4", sa.LargeBinary(), nullable=True),
        sa.Column("provenance", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["resident_id"],
            ["residents.id"],
            name=op.f("fk_resident_records_resident_id_residents"),
        ),
        sa.PrimaryKeyConstraint("resident_id", name=op.f("pk_resident_records")),
    )


def downgrade() -> None:
    # The code before this revision cannot read the records: dropping them would lose
    # every value written since. An offline script cannot look; the DBA reads it.
    if not context.is_offline_mode():
        held = op.get_bind().scalar(sa.text("SELECT count(*) FROM resident_records"))
        if held:
            lang = negotiate(None, os.environ.get("VAULT_LANG"))
            raise CommandError(text("db.records.downgrade-refused", lang, rows=held))
    op.drop_table("resident_records")
