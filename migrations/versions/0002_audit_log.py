"""audit log: append-only entries (partitioned by month on PostgreSQL), leaves, nodes, checkpoints

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 15:53:13.604898
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Expand/contract (docs/postgresql.md): 0001-0010 predate the rule and are grandfathered.
phase: str = "expand"


def upgrade() -> None:

    op.create_table(
        "audit_checkpoints",
        sa.Column("tree_size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("checkpoint", sa.Text(), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tree_size", name=op.f("pk_audit_checkpoints")),
    )
    op.create_table(
        "audit_entries",
        sa.Column("entry_id", sa.String(length=40), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("subject_type", sa.String(length=32), nullable=True),
        sa.Column("organisation", sa.String(length=64), nullable=True),
        sa.Column("client", sa.String(length=64), nullable=True),
        sa.Column("user", sa.String(length=128), nullable=True),
        sa.Column("on_behalf_of", sa.String(length=128), nullable=True),
        sa.Column("purpose", sa.String(length=64), nullable=True),
        sa.Column("legal_basis", sa.String(length=64), nullable=True),
        sa.Column("consent_id", sa.String(length=64), nullable=True),
        sa.Column("resident_id", sa.String(length=32), nullable=True),
        sa.Column("resident_pseudonym", sa.String(length=64), nullable=True),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("decision_id", sa.String(length=64), nullable=True),
        sa.Column("evaluation_id", sa.String(length=64), nullable=True),
        sa.Column("policy_revision", sa.String(length=64), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.String(length=200), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("canonical", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("entry_id", "recorded_at", name=op.f("pk_audit_entries")),
        postgresql_partition_by="RANGE (recorded_at)",
    )
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audit_entries_organisation"), ["organisation"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_audit_entries_outcome"), ["outcome"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_entries_purpose"), ["purpose"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_audit_entries_recorded_at"), ["recorded_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_audit_entries_resident_id"), ["resident_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_audit_entries_user"), ["user"], unique=False)

    op.create_table(
        "audit_leaves",
        sa.Column("leaf_index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("entry_id", sa.String(length=40), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("integrated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("leaf_index", name=op.f("pk_audit_leaves")),
        sa.UniqueConstraint("entry_id", name=op.f("uq_audit_leaves_entry_id")),
    )
    op.create_table(
        "audit_tree_nodes",
        sa.Column("level", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("level", "index", name=op.f("pk_audit_tree_nodes")),
    )
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_partitions_and_guards()
    else:
        _sqlite_guards()


APPEND_ONLY = ("audit_entries", "audit_leaves", "audit_tree_nodes", "audit_checkpoints")


def _sqlite_guards() -> None:
    for table in APPEND_ONLY:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            )


def _postgresql_partitions_and_guards() -> None:
    # The refusal is the database's own: a trigger for every role, the table owner and
    # superusers included, and no UPDATE/DELETE/TRUNCATE privilege for anyone else.
    op.execute("""
        CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
            USING ERRCODE = 'insufficient_privilege';
        END $$
    """)
    # Monthly partitions, created ahead; a default partition catches anything beyond, so
    # an insert never fails for want of a partition. Each partition refuses TRUNCATE too.
    op.execute("""
        CREATE FUNCTION audit_ensure_partitions(months_ahead integer) RETURNS integer
        LANGUAGE plpgsql AS $$
        DECLARE
          month date := date_trunc('month', now() - interval '1 month')::date;
          last date := (date_trunc('month', now()) + make_interval(months => months_ahead))::date;
          name text;
          created integer := 0;
        BEGIN
          WHILE month <= last LOOP
            name := 'audit_entries_' || to_char(month, 'YYYY_MM');
            IF to_regclass(name) IS NULL THEN
              EXECUTE format(
                'CREATE TABLE %I PARTITION OF audit_entries FOR VALUES FROM (%L) TO (%L)',
                name, month, (month + interval '1 month')::date);
              EXECUTE format(
                'CREATE TRIGGER %I BEFORE TRUNCATE ON %I '
                'FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()',
                name || '_no_truncate', name);
              created := created + 1;
            END IF;
            month := (month + interval '1 month')::date;
          END LOOP;
          RETURN created;
        END $$
    """)
    op.execute("CREATE TABLE audit_entries_default PARTITION OF audit_entries DEFAULT")
    op.execute(
        "CREATE TRIGGER audit_entries_default_no_truncate BEFORE TRUNCATE ON audit_entries_default "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()"
    )
    op.execute("SELECT audit_ensure_partitions(12)")
    for table in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()"
        )
        op.execute(f"REVOKE UPDATE, DELETE, TRUNCATE ON {table} FROM PUBLIC")


def downgrade() -> None:

    op.drop_table("audit_tree_nodes")
    op.drop_table("audit_leaves")
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_entries_user"))
        batch_op.drop_index(batch_op.f("ix_audit_entries_resident_id"))
        batch_op.drop_index(batch_op.f("ix_audit_entries_recorded_at"))
        batch_op.drop_index(batch_op.f("ix_audit_entries_purpose"))
        batch_op.drop_index(batch_op.f("ix_audit_entries_outcome"))
        batch_op.drop_index(batch_op.f("ix_audit_entries_organisation"))

    op.drop_table("audit_entries")
    op.drop_table("audit_checkpoints")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS audit_ensure_partitions(integer)")
        op.execute("DROP FUNCTION IF EXISTS audit_refuse_change()")
