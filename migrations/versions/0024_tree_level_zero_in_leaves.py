"""level 0 of the Merkle tree is the leaves' hashes: its copies in audit_tree_nodes are
dropped (a contract, issue 20)

Every leaf's hash was stored twice: in `audit_leaves` and as the level-0 node. The code of
this release reads level 0 from `audit_leaves` and, until this migration has run, still
writes the level-0 nodes older nodes serve proofs from. Before deleting, every level-0
node is checked against its leaf: a difference means the tree was changed behind the log,
and the migration refuses, naming the leaves, so the evidence is kept.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07 14:00:00.000000
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from alembic import context, op
from alembic.util import CommandError

from migrations.guards import guard_lifted
from vault.i18n import negotiate, text

revision: str = "0024"
down_revision: str | Sequence[str] | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# Contract: the code before this release reads level 0 from audit_tree_nodes.
phase: str = "contract"

_DIFFERING = """
    SELECT n."index" FROM audit_tree_nodes n
    LEFT JOIN audit_leaves l ON l.leaf_index = n."index"
    WHERE n.level = 0 AND (l.leaf_hash IS NULL OR l.leaf_hash <> n.hash)
    ORDER BY n."index" LIMIT 20
"""


def upgrade() -> None:
    if not context.is_offline_mode():  # the DBA reviewing `--sql` checks with `audit verify`
        differing = [str(i) for (i,) in op.get_bind().exec_driver_sql(_DIFFERING)]
        if differing:
            lang = negotiate(None, os.environ.get("VAULT_LANG"))
            raise CommandError(text("db.audit.tree-altered", lang, leaves=", ".join(differing)))
    with guard_lifted("audit_tree_nodes", "DELETE"):
        op.execute("DELETE FROM audit_tree_nodes WHERE level = 0")


def downgrade() -> None:
    # The older code reads level 0 from audit_tree_nodes: the leaves' hashes, copied back.
    op.execute(
        'INSERT INTO audit_tree_nodes (level, "index", hash) '
        "SELECT 0, leaf_index, leaf_hash FROM audit_leaves ORDER BY leaf_index"
    )
