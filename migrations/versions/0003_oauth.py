"""oauth: clients, users, authorization codes, refresh-token families, revoked jtis, token keys

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 16:14:53.816284
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Expand/contract (docs/postgresql.md): 0001-0010 predate the rule and are grandfathered.
phase: str = "expand"


def upgrade() -> None:
    op.create_table(
        "oauth_revoked_access_tokens",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_oauth_revoked_access_tokens")),
    )
    with op.batch_alter_table("oauth_revoked_access_tokens", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_oauth_revoked_access_tokens_expires_at"), ["expires_at"], unique=False
        )

    op.create_table(
        "oauth_signing_keys",
        sa.Column("kid", sa.String(length=40), nullable=False),
        sa.Column("algorithm", sa.String(length=16), nullable=False),
        sa.Column("public_key", sa.LargeBinary(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_after", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_oauth_signing_keys")),
    )
    op.create_table(
        "oauth_clients",
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("secret_hash", sa.String(length=255), nullable=True),
        sa.Column("organisation_id", sa.String(length=32), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("first_party", sa.Boolean(), nullable=False),
        sa.Column("grant_types", sa.JSON(), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("purposes", sa.JSON(), nullable=False),
        sa.Column("redirect_uris", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "kind IN ('confidential', 'public')", name=op.f("ck_oauth_clients_kind")
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_oauth_clients_organisation_id_organisations"),
        ),
        sa.PrimaryKeyConstraint("client_id", name=op.f("pk_oauth_clients")),
    )
    with op.batch_alter_table("oauth_clients", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_oauth_clients_organisation_id"), ["organisation_id"], unique=False
        )

    op.create_table(
        "oauth_users",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("organisation_id", sa.String(length=32), nullable=True),
        sa.Column("resident_id", sa.String(length=32), nullable=True),
        sa.Column("badge_number", sa.String(length=32), nullable=True),
        sa.Column("jurisdiction", sa.JSON(), nullable=True),
        sa.Column("purposes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "role IN ('resident', 'grid_worker', 'community_worker', 'auditor')",
            name=op.f("ck_oauth_users_role"),
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_oauth_users_organisation_id_organisations"),
        ),
        sa.ForeignKeyConstraint(
            ["resident_id"], ["residents.id"], name=op.f("fk_oauth_users_resident_id_residents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_users")),
        sa.UniqueConstraint("username", name=op.f("uq_oauth_users_username")),
    )
    with op.batch_alter_table("oauth_users", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_oauth_users_organisation_id"), ["organisation_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_oauth_users_resident_id"), ["resident_id"], unique=False
        )

    op.create_table(
        "oauth_authorization_codes",
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=True),
        sa.Column("scope", sa.String(length=500), nullable=False),
        sa.Column("code_challenge", sa.String(length=128), nullable=False),
        sa.Column("code_challenge_method", sa.String(length=8), nullable=False),
        sa.Column("family_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["oauth_clients.client_id"],
            name=op.f("fk_oauth_authorization_codes_client_id_oauth_clients"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["oauth_users.id"],
            name=op.f("fk_oauth_authorization_codes_user_id_oauth_users"),
        ),
        sa.PrimaryKeyConstraint("code_hash", name=op.f("pk_oauth_authorization_codes")),
    )
    with op.batch_alter_table("oauth_authorization_codes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_oauth_authorization_codes_client_id"), ["client_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_oauth_authorization_codes_expires_at"), ["expires_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_oauth_authorization_codes_user_id"), ["user_id"], unique=False
        )

    op.create_table(
        "oauth_token_families",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_reason", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["oauth_clients.client_id"],
            name=op.f("fk_oauth_token_families_client_id_oauth_clients"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["oauth_users.id"],
            name=op.f("fk_oauth_token_families_user_id_oauth_users"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_token_families")),
    )
    with op.batch_alter_table("oauth_token_families", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_oauth_token_families_client_id"), ["client_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_oauth_token_families_expires_at"), ["expires_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_oauth_token_families_user_id"), ["user_id"], unique=False
        )

    op.create_table(
        "oauth_refresh_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("family_id", sa.String(length=32), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("scope", sa.String(length=500), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["oauth_clients.client_id"],
            name=op.f("fk_oauth_refresh_tokens_client_id_oauth_clients"),
        ),
        sa.ForeignKeyConstraint(
            ["family_id"],
            ["oauth_token_families.id"],
            name=op.f("fk_oauth_refresh_tokens_family_id_oauth_token_families"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["oauth_users.id"],
            name=op.f("fk_oauth_refresh_tokens_user_id_oauth_users"),
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_oauth_refresh_tokens")),
    )
    with op.batch_alter_table("oauth_refresh_tokens", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_oauth_refresh_tokens_family_id"), ["family_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("oauth_refresh_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oauth_refresh_tokens_family_id"))

    op.drop_table("oauth_refresh_tokens")
    with op.batch_alter_table("oauth_token_families", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oauth_token_families_user_id"))
        batch_op.drop_index(batch_op.f("ix_oauth_token_families_expires_at"))
        batch_op.drop_index(batch_op.f("ix_oauth_token_families_client_id"))

    op.drop_table("oauth_token_families")
    with op.batch_alter_table("oauth_authorization_codes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oauth_authorization_codes_user_id"))
        batch_op.drop_index(batch_op.f("ix_oauth_authorization_codes_expires_at"))
        batch_op.drop_index(batch_op.f("ix_oauth_authorization_codes_client_id"))

    op.drop_table("oauth_authorization_codes")
    with op.batch_alter_table("oauth_users", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oauth_users_resident_id"))
        batch_op.drop_index(batch_op.f("ix_oauth_users_organisation_id"))

    op.drop_table("oauth_users")
    with op.batch_alter_table("oauth_clients", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oauth_clients_organisation_id"))

    op.drop_table("oauth_clients")
    op.drop_table("oauth_signing_keys")
    with op.batch_alter_table("oauth_revoked_access_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oauth_revoked_access_tokens_expires_at"))

    op.drop_table("oauth_revoked_access_tokens")
