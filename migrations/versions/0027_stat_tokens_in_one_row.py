"""statistics tokens in one row per resident, with their home: resident_stats replaces
resident_stat_tokens; and the statistics ledger's index (a contract, issue 20)

A statistics table joined every resident in scope to their household, room and building,
then to one row per resident and field in `resident_stat_tokens`: 14 times the plain
GROUP BY at 10^6 residents, and 250 bytes a resident on SQLite. From here on each counted
resident (active, not a decoy) has one row of `resident_stats`, with their building and
household and `tokens`, a 16-byte slot per statistics field (`stat_token_slots`, given in
the order of the fields' names), all under the row's epoch: a table reads that one table
and the buildings (vault/stat_tokens.py).

The rows are built from the token rows with nothing decrypted: a row's token at its
field's slot; no row is a field not set (`NOT_SET`) when the field's tokens are complete,
and not computed yet (`UNKNOWN`) when it is still being backfilled. Then the token rows
go. The code of this release writes and counts the token rows until this has run, as
the older code does, so it is a contract: run it when no older node is left.

Tokens of two epochs cannot share one row's epoch without the keys, so while a KEK
rotation is unfinished this refuses, changing nothing. A resident whose rows still hold
two epochs otherwise (only a damaged table could) keeps those of the epoch first by name
and has the others' slots not computed; their field becomes incomplete, for the backfill
to read again. The downgrade makes the token rows again from the slots.

The privacy budget sums the month's `stats` entries of the log; a partial index finds
them (at 10^6 residents the query read every entry of the organisation: 0.8 s a table).

On PostgreSQL the token table is locked against writes from the start (nodes of this
release write it until they see this applied), so writes of a statistics field wait for
the migration: 37 s at 10^6 residents. Run it in a quiet hour.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-08 10:00:00.000000
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op
from alembic.util import CommandError

from vault.i18n import negotiate, text

revision: str = "0027"
down_revision: str | Sequence[str] | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Contract: the code before this release writes and counts resident_stat_tokens.
phase: str = "contract"

# Held equal to vault.stat_tokens by a test, and written out here so that the migration
# does not change when that code does.
TOKEN_BYTES = 16
NOT_SET = bytes(TOKEN_BYTES)
UNKNOWN = b"\xff" * TOKEN_BYTES
_CHUNK = 20_000
_LEDGER = "ix_audit_entries_stats_ledger"

_SLOTS = (
    "INSERT INTO stat_token_slots (field, slot) SELECT field,"
    " (SELECT count(*) FROM stat_token_fields AS earlier WHERE earlier.field < f.field)"
    " FROM stat_token_fields AS f"
)
_HOMES = (
    "SELECT r.id, r.household_id, rooms.building_id FROM residents r"
    " LEFT JOIN households h ON h.id = r.household_id LEFT JOIN rooms ON rooms.id = h.room_id"
    " WHERE r.status = 'active' AND NOT r.is_decoy"
)
# PostgreSQL builds the rows in SQL (so that `db upgrade --sql` shows it).
_PG_DAMAGED = (
    "UPDATE stat_token_fields SET complete = false WHERE field IN"
    " (SELECT t.field FROM resident_stat_tokens t JOIN"
    " (SELECT resident_id, min(epoch) AS first FROM resident_stat_tokens GROUP BY resident_id)"
    " AS m ON m.resident_id = t.resident_id WHERE t.epoch <> m.first)"
)
_PG_BUILD = (
    "INSERT INTO resident_stats (resident_id, building_id, household_id, epoch, tokens)"
    " SELECT id, max(building_id), max(household_id), max(first), coalesce(string_agg(CASE"
    " WHEN token IS NULL THEN CASE WHEN complete THEN decode(repeat('00', 16), 'hex')"
    " ELSE decode(repeat('ff', 16), 'hex') END"
    " WHEN epoch = first THEN token ELSE decode(repeat('ff', 16), 'hex') END,"
    " CAST('' AS bytea) ORDER BY slot) FILTER (WHERE slot IS NOT NULL), CAST('' AS bytea))"
    " FROM (SELECT homes.id, homes.household_id, homes.building_id, s.slot, f.complete,"
    " t.epoch, t.token, min(t.epoch) OVER (PARTITION BY homes.id) AS first"
    " FROM (SELECT r.id, r.household_id, rooms.building_id FROM residents r"
    " LEFT JOIN households h ON h.id = r.household_id LEFT JOIN rooms ON rooms.id = h.room_id"
    " WHERE r.status = 'active' AND NOT r.is_decoy) AS homes"  # _HOMES
    " LEFT JOIN (stat_token_slots s JOIN stat_token_fields f ON f.field = s.field) ON true"
    " LEFT JOIN resident_stat_tokens t ON t.resident_id = homes.id AND t.field = s.field"
    ") AS slotted GROUP BY id"
)


def _create_tables() -> None:
    op.create_table(
        "stat_token_slots",
        sa.Column("field", sa.String(length=64), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("field", name=op.f("pk_stat_token_slots")),
        sa.UniqueConstraint("slot", name=op.f("uq_stat_token_slots_slot")),
    )
    op.create_table(
        "resident_stats",
        sa.Column("resident_id", sa.String(length=32), nullable=False),
        sa.Column("building_id", sa.String(length=32), nullable=True),
        sa.Column("household_id", sa.String(length=32), nullable=True),
        sa.Column("epoch", sa.String(length=64), nullable=True),
        sa.Column("tokens", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["resident_id"], ["residents.id"], name=op.f("fk_resident_stats_resident_id_residents")
        ),
        sa.PrimaryKeyConstraint("resident_id", name=op.f("pk_resident_stats")),
        sqlite_with_rowid=False,
    )


def upgrade() -> None:
    bind = op.get_bind()
    if not context.is_offline_mode():  # the DBA reviewing `--sql` checks `keys status`
        unfinished = bind.execute(
            sa.text("SELECT min(id) FROM key_rotations WHERE kind = 'kek' AND finished_at IS NULL")
        ).scalar()
        if unfinished is not None:
            lang = negotiate(None, os.environ.get("VAULT_LANG"))
            raise CommandError(text("db.stats.rotation-unfinished", lang, job=unfinished))
    _create_tables()
    op.execute(_SLOTS)
    if context.get_context().dialect.name == "postgresql":
        # Nodes of this release write token rows until they see this applied: hold their
        # writes until the table is gone, so that none lands after the rows are read (on
        # SQLite the migration holds the database's one write lock throughout).
        op.execute("LOCK TABLE resident_stat_tokens IN SHARE MODE")
        op.execute(_PG_DAMAGED)
        op.execute(_PG_BUILD)
    else:
        _build_sqlite(bind)
    op.drop_table("resident_stat_tokens")
    # Small (one entry in the thousands), but built under a lock that holds the log's
    # writes for the scan: about half a second at 2x10^6 entries.
    op.create_index(
        _LEDGER,
        "audit_entries",
        ["organisation", "recorded_at"],
        postgresql_where=sa.text("action = 'stats'"),
        sqlite_where=sa.text("action = 'stats'"),
    )


def _packed(
    rows: list[tuple[str, str, bytes]], slots: dict[str, tuple[int, bool]], damaged: set[str]
) -> tuple[str | None, bytes]:
    """One resident's (epoch, tokens) from their token rows (field, epoch, token)."""
    packed = bytearray(UNKNOWN * len(slots))
    for slot, complete in slots.values():
        if complete:
            packed[slot * TOKEN_BYTES : (slot + 1) * TOKEN_BYTES] = NOT_SET
    epoch = min((row_epoch for _, row_epoch, _ in rows), default=None)
    for field, row_epoch, token in rows:
        if field not in slots:
            continue
        slot = slots[field][0]
        kept = bytes(token)
        if row_epoch != epoch:
            damaged.add(field)
            kept = UNKNOWN
        packed[slot * TOKEN_BYTES : (slot + 1) * TOKEN_BYTES] = kept
    return epoch, bytes(packed)


def _build_sqlite(bind: sa.Connection) -> None:
    """The same as the PostgreSQL statements, a chunk of residents at a time."""
    slots = {
        field: (slot, bool(complete))
        for field, slot, complete in bind.execute(
            sa.text(
                "SELECT s.field, s.slot, f.complete FROM stat_token_slots s"
                " JOIN stat_token_fields f ON f.field = s.field"
            )
        )
    }
    damaged: set[str] = set()
    write = sa.text(
        "INSERT INTO resident_stats (resident_id, building_id, household_id, epoch, tokens)"
        " VALUES (:id, :b, :h, :e, :t)"
    )
    after = ""
    while True:
        homes = bind.execute(
            sa.text(_HOMES + " AND r.id > :after ORDER BY r.id LIMIT :n"),
            {"after": after, "n": _CHUNK},
        ).all()
        if not homes:
            break
        after = homes[-1][0]
        by_resident: dict[str, list[tuple[str, str, bytes]]] = {h[0]: [] for h in homes}
        for resident_id, field, epoch, token in bind.execute(
            sa.text(
                "SELECT resident_id, field, epoch, token FROM resident_stat_tokens"
                " WHERE resident_id >= :first AND resident_id <= :last"
            ),
            {"first": homes[0][0], "last": after},
        ):
            if resident_id in by_resident:
                by_resident[resident_id].append((field, epoch, token))
        rows: list[dict[str, Any]] = []
        for resident_id, household, building in homes:
            epoch, packed = _packed(by_resident[resident_id], slots, damaged)
            rows.append({"id": resident_id, "b": building, "h": household, "e": epoch, "t": packed})
        bind.execute(write, rows)
    for field in sorted(damaged):
        bind.execute(
            sa.text("UPDATE stat_token_fields SET complete = :no WHERE field = :f"),
            {"no": False, "f": field},
        )


def downgrade() -> None:
    op.drop_index(_LEDGER, table_name="audit_entries")
    if context.get_context().dialect.name == "sqlite":
        # As 0025 left it: the rows in their key's b-tree.
        op.execute(
            "CREATE TABLE resident_stat_tokens (resident_id VARCHAR(32) NOT NULL,"
            " field VARCHAR(64) NOT NULL, epoch VARCHAR(64) NOT NULL, token BLOB NOT NULL,"
            " CONSTRAINT pk_resident_stat_tokens PRIMARY KEY (resident_id, field),"
            " CONSTRAINT fk_resident_stat_tokens_resident_id_residents"
            " FOREIGN KEY(resident_id) REFERENCES residents (id)) WITHOUT ROWID"
        )
    else:
        op.create_table(
            "resident_stat_tokens",
            sa.Column("resident_id", sa.String(length=32), nullable=False),
            sa.Column("field", sa.String(length=64), nullable=False),
            sa.Column("epoch", sa.String(length=64), nullable=False),
            sa.Column("token", sa.LargeBinary(length=32), nullable=False),
            sa.ForeignKeyConstraint(
                ["resident_id"],
                ["residents.id"],
                name="fk_resident_stat_tokens_resident_id_residents",
            ),
            sa.PrimaryKeyConstraint("resident_id", "field", name="pk_resident_stat_tokens"),
        )
    bind = op.get_bind()
    fields = dict(bind.execute(sa.text("SELECT slot, field FROM stat_token_slots")).all())
    insert = sa.text(
        "INSERT INTO resident_stat_tokens (resident_id, field, epoch, token)"
        " VALUES (:r, :f, :e, :t)"
    )
    after = ""
    while True:
        found = bind.execute(
            sa.text(
                "SELECT resident_id, epoch, tokens FROM resident_stats"
                " WHERE resident_id > :after ORDER BY resident_id LIMIT :n"
            ),
            {"after": after, "n": _CHUNK},
        ).all()
        if not found:
            break
        after = found[-1][0]
        rows = [
            {"r": resident_id, "f": fields[slot], "e": epoch, "t": token}
            for resident_id, epoch, tokens in found
            for slot in range(len(tokens) // TOKEN_BYTES)
            if slot in fields
            and (token := bytes(tokens[slot * TOKEN_BYTES : (slot + 1) * TOKEN_BYTES]))
            not in (NOT_SET, UNKNOWN)
        ]
        if rows:
            bind.execute(insert, rows)
    op.drop_table("resident_stats")
    op.drop_table("stat_token_slots")
