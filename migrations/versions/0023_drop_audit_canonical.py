"""drop entries' stored canonical bytes; their columns make them (the contract half of
0020, issue 20)

Before dropping, every stored byte string is checked against the one its columns make:
a difference means a column was changed behind the log's back, and the migration refuses,
naming the entries, so the evidence is kept (`resident-vault audit verify` tells more).

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07 12:00:01.000000
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op
from alembic.util import CommandError

from audit.encoding import ENTRY_COLUMN_NAMES, canonical_of
from vault.i18n import negotiate, text
from vault.models import TZDateTime

revision: str = "0023"
down_revision: str | Sequence[str] | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Contract: the code before 0020 writes and reads the column.
phase: str = "contract"

_TYPES = {"recorded_at": TZDateTime(), "fields": sa.JSON(), "details": sa.JSON()}


def _entries() -> sa.Table:
    columns = [sa.Column(n, _TYPES.get(n, sa.String())) for n in ENTRY_COLUMN_NAMES]
    return sa.Table(
        "audit_entries", sa.MetaData(), *columns, sa.Column("canonical", sa.LargeBinary())
    )


def _altered() -> list[str]:
    """Entries whose stored bytes differ from those their columns make (up to 20)."""
    entries = _entries()
    found: list[str] = []
    statement = (
        sa.select(entries.c.canonical, *(entries.c[n] for n in ENTRY_COLUMN_NAMES))
        .where(entries.c.canonical.is_not(None))
        .execution_options(yield_per=5_000)  # on the statement: the DDL after must not stream
    )
    rows = op.get_bind().execute(statement)
    for stored, *values in rows:
        if canonical_of(values) != bytes(stored):
            found.append(str(values[0]))
            if len(found) == 20:
                break
    rows.close()
    return found


def upgrade() -> None:
    if not context.is_offline_mode():  # the DBA reviewing `--sql` checks with `audit verify`
        altered = _altered()
        if altered:
            lang = negotiate(None, os.environ.get("VAULT_LANG"))
            raise CommandError(text("db.audit.altered", lang, entries=", ".join(altered)))
    if context.get_context().dialect.name == "sqlite":
        # Native since SQLite 3.35: no copy of the table, and its guards stay.
        op.execute("ALTER TABLE audit_entries DROP COLUMN canonical")
    else:
        op.drop_column("audit_entries", "canonical")


def downgrade() -> None:
    # Back as 0020 left it: present and empty for new entries (the code before 0020 fills
    # it for those it writes; the others' bytes come from their columns, as now).
    if context.get_context().dialect.name == "sqlite":
        op.execute("ALTER TABLE audit_entries ADD COLUMN canonical BLOB")
    else:
        op.add_column("audit_entries", sa.Column("canonical", sa.LargeBinary(), nullable=True))
