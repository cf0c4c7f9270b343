"""drop the per-field table `resident_fields` once its values are in `resident_records`
(the contract half of 0017, issue 20)

Refuses while the table still holds a row, so nothing is dropped that was not moved:
`resident-vault db upgrade --phase expand`, then `resident-vault db move-records`, then
`resident-vault db upgrade` (docs/postgresql.md, docs/deployment.md).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-08 09:05:00.000000
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op
from alembic.util import CommandError

from vault.i18n import negotiate, text

revision: str = "0019"
down_revision: str | Sequence[str] | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Contract: the code before 0017 reads and writes resident_fields.
phase: str = "contract"


def upgrade() -> None:
    if not context.is_offline_mode():  # the DBA reviewing `--sql` runs it after the move
        left = op.get_bind().scalar(sa.text("SELECT count(*) FROM resident_fields"))
        if left:
            lang = negotiate(None, os.environ.get("VAULT_LANG"))
            raise CommandError(text("db.records.not-moved", lang, rows=left))
    op.drop_table("resident_fields")


def downgrade() -> None:
    # Empty, as 0001 made it: the values stay in resident_records, which 0017 keeps.
    op.create_table(
        "resident_fields",
        sa.Column("resident_id", sa.String(length=32), nullable=False),
        sa.Column("field", sa.String(length=64), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("written_by", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["resident_id"], ["residents.id"], name=op.f("fk_resident_fields_resident_id_residents")
        ),
        sa.PrimaryKeyConstraint("resident_id", "field", name=op.f("pk_resident_fields")),
    )
