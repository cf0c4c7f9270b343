"""place tables analysed early: autovacuum refreshes the planner's statistics of the small
place and organisation tables after a few changes, not 50 (issue 20)

A district's 50 buildings, inserted once, stayed at autovacuum's default threshold (more
than 50 changes) and were never analysed; the planner then took every community for one
building and counted statistics with nested loops, three times slower than with hash
joins. A low threshold is only a storage parameter: no lock beyond a moment's, no
rewrite. SQLite has no autovacuum; nothing changes there.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 14:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import context, op

revision: str = "0021"
down_revision: str | Sequence[str] | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
phase: str = "expand"

PLACE_TABLES = (
    "streets",
    "communities",
    "grids",
    "buildings",
    "rooms",
    "households",
    "organisations",
    "mandates",
)
# Changes (beyond 10% of the rows) after which autovacuum analyses a table.
THRESHOLD = 5


def upgrade() -> None:
    if context.get_context().dialect.name != "postgresql":
        return
    for table in PLACE_TABLES:
        op.execute(f"ALTER TABLE {table} SET (autovacuum_analyze_threshold = {THRESHOLD})")


def downgrade() -> None:
    if context.get_context().dialect.name != "postgresql":
        return
    for table in PLACE_TABLES:
        op.execute(f"ALTER TABLE {table} RESET (autovacuum_analyze_threshold)")
