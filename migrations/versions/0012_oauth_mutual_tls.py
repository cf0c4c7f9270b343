"""oauth mutual TLS: how a client authenticates (RFC 8705 tls_client_auth or
self_signed_tls_client_auth), what it is registered with, and certificate-bound tokens

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 11:05:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Expand: new nullable columns and one with a server default; older code never reads them.
phase: str = "expand"


def upgrade() -> None:
    with op.batch_alter_table("oauth_clients") as batch:
        batch.add_column(sa.Column("token_endpoint_auth_method", sa.String(40), nullable=True))
        batch.add_column(sa.Column("tls_client_auth_subject_dn", sa.Text(), nullable=True))
        batch.add_column(sa.Column("tls_client_auth_san", sa.Text(), nullable=True))
        batch.add_column(sa.Column("tls_client_certificates", sa.JSON(), nullable=True))
        batch.add_column(
            sa.Column(
                "tls_client_certificate_bound_access_tokens",
                sa.Boolean(),
                server_default=sa.false(),
                nullable=False,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("oauth_clients") as batch:
        batch.drop_column("tls_client_certificate_bound_access_tokens")
        batch.drop_column("tls_client_certificates")
        batch.drop_column("tls_client_auth_san")
        batch.drop_column("tls_client_auth_subject_dn")
        batch.drop_column("token_endpoint_auth_method")
