"""the district's policy data in the database: the purpose registry, mandates with their
history, and the change log whose highest id is the data revision (vault/purposes.py,
vault/mandates.py, vault/policy_data.py, issue 19); accounts gain the operator role

The registry is seeded with the purposes the policy shipped with, and the demo
departments' mandates (until now in policies/vault/data.json) are carried over for the
organisations of that id a vault already has, so an upgraded vault decides as before.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 02:10:00.000000
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import context, op

from policies.bundle import shipped_data

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Expand: new tables, and one more value a CHECK allows; older code reads neither.
phase: str = "expand"

ROLES_BEFORE = "role IN ('resident', 'grid_worker', 'community_worker', 'auditor')"
ROLES_AFTER = "role IN ('resident', 'grid_worker', 'community_worker', 'auditor', 'operator')"

# The organisation mandates policies/vault/data.json held before this revision.
CARRIED_MANDATES = {
    "org_civil_affairs": ("subsidy-review", "elderly-care-visit", "community-statistics"),
    "org_health": ("public-health-followup", "community-statistics"),
    "org_public_security": ("household-registration-check",),
}


def upgrade() -> None:
    purposes = op.create_table(
        "purposes",
        sa.Column("code", sa.String(length=48), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("added_by", sa.String(length=64), nullable=True),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_purposes")),
    )
    mandates = op.create_table(
        "mandates",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("organisation_id", sa.String(length=32), nullable=False),
        sa.Column("purpose", sa.String(length=48), nullable=False),
        sa.Column("actions", sa.JSON(), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=True),
        sa.Column("basis", sa.String(length=16), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("granted_by", sa.String(length=64), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_mandates_organisation_id_organisations"),
        ),
        sa.ForeignKeyConstraint(
            ["purpose"], ["purposes.code"], name=op.f("fk_mandates_purpose_purposes")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mandates")),
    )
    op.create_index(op.f("ix_mandates_organisation_id"), "mandates", ["organisation_id"])
    op.create_index(op.f("ix_mandates_revoked_at"), "mandates", ["revoked_at"])
    changes = op.create_table(
        "policy_data_changes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("change", sa.String(length=40), nullable=False),
        sa.Column("subject", sa.String(length=120), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_data_changes")),
    )
    with op.batch_alter_table("oauth_users") as batch:
        batch.drop_constraint(op.f("ck_oauth_users_role"), type_="check")
        batch.create_check_constraint(op.f("ck_oauth_users_role"), sa.text(ROLES_AFTER))
    _seed(purposes, mandates, changes)


def _seed(purposes: sa.Table, mandates: sa.Table, changes: sa.Table) -> None:
    now = datetime.now(UTC)
    shipped = shipped_data().get("purposes", {})
    offline = context.is_offline_mode()
    if offline:
        # `db upgrade --sql` renders literals, and SQLAlchemy has no literal form of JSON:
        # the same documents as JSON text, which both databases cast on insert.
        purposes = sa.table(
            "purposes",
            sa.column("code", sa.String()),
            sa.column("definition", sa.Text()),
            sa.column("added_at", sa.DateTime(timezone=True)),
            sa.column("added_by", sa.String()),
        )
    op.bulk_insert(
        purposes,
        [
            {
                "code": code,
                "definition": json.dumps(definition, ensure_ascii=False) if offline else definition,
                "added_at": now,
                "added_by": "shipped",
            }
            for code, definition in sorted(shipped.items())
        ],
    )
    # An offline script cannot look: the demo departments' mandates are carried over online.
    present = (
        set()
        if offline
        else {
            row[0]
            for row in op.get_bind().execute(
                sa.text("SELECT id FROM organisations WHERE type = 'department'")
            )
        }
    )
    carried = [
        {
            "organisation_id": org,
            "purpose": code,
            "actions": list(shipped[code]["actions"]),
            "fields": None,
            "basis": "law",
            "granted_at": now,
            "granted_by": "shipped",
        }
        for org, codes in CARRIED_MANDATES.items()
        if org in present
        for code in codes
        if code in shipped
    ]
    if carried:
        op.bulk_insert(mandates, carried)
    op.bulk_insert(
        changes,
        [{"changed_at": now, "change": "registry.seeded", "subject": "shipped", "actor": None}],
    )


def downgrade() -> None:
    with op.batch_alter_table("oauth_users") as batch:
        batch.drop_constraint(op.f("ck_oauth_users_role"), type_="check")
        batch.create_check_constraint(op.f("ck_oauth_users_role"), sa.text(ROLES_BEFORE))
    op.drop_table("policy_data_changes")
    op.drop_index(op.f("ix_mandates_revoked_at"), table_name="mandates")
    op.drop_index(op.f("ix_mandates_organisation_id"), table_name="mandates")
    op.drop_table("mandates")
    op.drop_table("purposes")
