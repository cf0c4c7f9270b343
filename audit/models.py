"""Tables of the audit log. All four are append-only: the database refuses UPDATE and DELETE.

- `audit_entries`: one row per access or operational event; its columns determine its
  canonical bytes (what the Merkle tree hashes, `audit.encoding`).
- `audit_leaves`: the dense, gap-free leaf index the integrator gives each committed entry.
- `audit_tree_nodes`: every complete perfect subtree's hash above the leaves (level 0 is
  `audit_leaves.leaf_hash`), so proofs cost O(log n) reads.
- `audit_checkpoints`: signed tree heads, with the (unsigned) time they were signed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, LargeBinary, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from audit.encoding import ENTRY_COLUMN_NAMES, canonical_bytes
from vault.models import Base, TZDateTime


class AuditEntry(Base):
    __tablename__ = "audit_entries"
    # On PostgreSQL the table is partitioned by month, and a partitioned table's keys must
    # include the partition column: hence (entry_id, recorded_at), and no foreign keys in.
    __table_args__ = (
        # The statistics privacy budget sums an organisation's `stats` entries of the
        # month (the log is its ledger, access/stats/service.py): a few among millions.
        Index(
            "ix_audit_entries_stats_ledger",
            "organisation",
            "recorded_at",
            postgresql_where=text("action = 'stats'"),
            sqlite_where=text("action = 'stats'"),
        ),
        {"postgresql_partition_by": "RANGE (recorded_at)"},
    )
    entry_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    recorded_at: Mapped[datetime] = mapped_column(TZDateTime(), primary_key=True, index=True)
    kind: Mapped[str] = mapped_column(String(16))  # access | event
    action: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16), index=True)  # allowed | denied | error
    channel: Mapped[str] = mapped_column(String(16))  # api | web | cli
    subject_type: Mapped[str | None] = mapped_column(String(32))
    organisation: Mapped[str | None] = mapped_column(String(64), index=True)
    client: Mapped[str | None] = mapped_column(String(64))
    user: Mapped[str | None] = mapped_column(String(128), index=True)
    on_behalf_of: Mapped[str | None] = mapped_column(String(128))
    purpose: Mapped[str | None] = mapped_column(String(64), index=True)
    legal_basis: Mapped[str | None] = mapped_column(String(64))
    consent_id: Mapped[str | None] = mapped_column(String(64))
    resident_id: Mapped[str | None] = mapped_column(String(32), index=True)
    resident_pseudonym: Mapped[str | None] = mapped_column(String(64))
    fields: Mapped[dict[str, str]] = mapped_column(JSON)  # field -> treatment, never values
    decision_id: Mapped[str | None] = mapped_column(String(64), index=True)
    evaluation_id: Mapped[str | None] = mapped_column(String(64), index=True)
    policy_revision: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(String(200))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)

    @property
    def canonical(self) -> bytes:
        """The bytes its leaf hashes (audit.encoding), made from the columns above."""
        return canonical_bytes({name: getattr(self, name) for name in ENTRY_COLUMN_NAMES})


# The columns an entry's canonical bytes are made of, in `ENTRY_COLUMN_NAMES` order: select
# them and pass the row to `audit.encoding.canonical_of`.
ENTRY_COLUMNS = tuple(AuditEntry.__table__.c[name] for name in ENTRY_COLUMN_NAMES)


class AuditQueue(Base):
    """Entries recorded but not yet integrated: an outbox written with each entry.

    The integrator reads its next batch here instead of anti-joining the whole log, so a
    batch costs the same at 10^7 entries as at 10^3. It is not part of the verifiable log:
    the integrator deletes rows once their leaves are stored, in the same transaction.
    """

    __tablename__ = "audit_queue"
    entry_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    recorded_at: Mapped[datetime] = mapped_column(TZDateTime(), index=True)


class AuditLeaf(Base):
    __tablename__ = "audit_leaves"
    # INTEGER on SQLite makes the index the table's rowid (migration 0026), not a second
    # copy of it in an index of its own.
    leaf_index: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=False
    )
    entry_id: Mapped[str] = mapped_column(String(40), unique=True)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))


# The contract migration after which level 0 lives in `audit_leaves` alone: until it has
# run, the integrator writes level-0 nodes too, for older nodes still serving proofs.
LEAVES_ARE_LEVEL_ZERO = "0024"
# The contract after which `audit_tree_nodes` keeps only the levels `audit.merkle.STRATUM`
# names: until it has run, the integrator writes every level, for older nodes serving
# proofs from them.
TREE_IN_STRATA = "0026"


class AuditTreeNode(Base):
    """A perfect subtree's hash, at the kept levels above 0 (`audit.merkle.STRATUM`): every
    level above 0 in a schema before migration 0026, and level 0 too before 0024."""

    __tablename__ = "audit_tree_nodes"
    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class AuditCheckpoint(Base):
    __tablename__ = "audit_checkpoints"
    tree_size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    checkpoint: Mapped[str] = mapped_column(Text)
    signed_at: Mapped[datetime] = mapped_column(TZDateTime())


class AuditArchive(Base):
    """A monthly partition of `audit_entries` detached to an archive file.

    Its entries are gone from the database; their leaves, tree nodes and checkpoints stay,
    and `manifest` (signed by the log's key) names the leaves the file holds and their
    digest, so verification can tell archived entries from removed ones without the file.
    """

    __tablename__ = "audit_archives"
    partition: Mapped[str] = mapped_column(String(63), primary_key=True)
    from_at: Mapped[datetime] = mapped_column(TZDateTime())
    to_at: Mapped[datetime] = mapped_column(TZDateTime())
    entries: Mapped[int] = mapped_column(BigInteger)
    manifest: Mapped[str] = mapped_column(Text)
    file_sha256: Mapped[str] = mapped_column(String(64))
    archived_at: Mapped[datetime] = mapped_column(TZDateTime())


APPEND_ONLY_TABLES = (
    "audit_entries",
    "audit_leaves",
    "audit_tree_nodes",
    "audit_checkpoints",
    "audit_archives",
)


class AuditAlert(Base):
    """A pattern in the log that looks like insider abuse, for an auditor to review.

    Not part of the verifiable log (its review status changes); each alert is also
    recorded there as an `alert.raised` event, and each review as `alert.reviewed`.
    """

    __tablename__ = "audit_alerts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    actor: Mapped[str] = mapped_column(String(128), index=True)  # user, else client
    actor_kind: Mapped[str] = mapped_column(String(8))  # user | client
    organisation: Mapped[str | None] = mapped_column(String(64))
    window_start: Mapped[datetime] = mapped_column(TZDateTime())
    window_end: Mapped[datetime] = mapped_column(TZDateTime())
    observed: Mapped[int] = mapped_column(Integer)
    threshold: Mapped[int] = mapped_column(Integer)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(TZDateTime())
    status: Mapped[str] = mapped_column(String(16), index=True)  # open | confirmed | dismissed
    reviewed_by: Mapped[str | None] = mapped_column(String(128))
    reviewed_at: Mapped[datetime | None] = mapped_column(TZDateTime())


class Suspension(Base):
    """An actor suspended pending review: the gate refuses them until it is lifted."""

    __tablename__ = "suspensions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    actor: Mapped[str] = mapped_column(String(128), index=True)
    actor_kind: Mapped[str] = mapped_column(String(8))
    alert_id: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(TZDateTime())
    lifted_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    lifted_by: Mapped[str | None] = mapped_column(String(128))
