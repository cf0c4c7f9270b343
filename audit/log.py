"""The access log: record entries, integrate them into the Merkle tree, sign checkpoints.

Recording happens in the caller's transaction, so an entry commits with the access it
records, and a failure to write it fails the access (fail closed). Integration is a
separate, single-writer step (like a transparency log's sequencer): it gives committed
entries dense leaf indexes in order and stores the tree's nodes. Checkpoints sign the
tree head in the C2SP format of `audit.checkpoint`.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import structlog
from sqlalchemy import (
    BigInteger,
    Column,
    LargeBinary,
    MetaData,
    String,
    Table,
    and_,
    delete,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from audit.checkpoint import sign_checkpoint_with, verifier_key
from audit.encoding import ENTRY_COLUMN_NAMES, canonical_of
from audit.errors import AuditUnavailable, ProofUnavailable
from audit.merkle import (
    CompactRange,
    Coord,
    is_kept_level,
    kept_spans,
    leaf_hash,
    nodes_from_kept,
    read_consistency_proof,
    read_inclusion_proof,
    read_root,
)
from audit.models import (
    ENTRY_COLUMNS,
    LEAVES_ARE_LEVEL_ZERO,
    TREE_IN_STRATA,
    AuditCheckpoint,
    AuditEntry,
    AuditLeaf,
    AuditQueue,
    AuditTreeNode,
)
from vault.db import bulk_insert, lock_writers, migration_applied
from vault.interfaces import Keyring
from vault.models import TZDateTime, utcnow

log = structlog.get_logger(__name__)

SIGNING_KEY_NAME = "audit-log"
_ENTRIES = cast(Table, AuditEntry.__table__)
_QUEUE = cast(Table, AuditQueue.__table__)
_LEAVES = cast(Table, AuditLeaf.__table__)
# audit_leaves before migration 0026, which dropped the integration time nothing read.
_OLDER_LEAVES = Table(
    "audit_leaves",
    MetaData(),
    Column("leaf_index", BigInteger, primary_key=True),
    Column("entry_id", String(40)),
    Column("leaf_hash", LargeBinary(32)),
    Column("integrated_at", TZDateTime()),
)
# Arbitrary constants naming the integrator's and the signer's PostgreSQL advisory locks.
_INTEGRATOR_LOCK = 0x5256_4155_4449_54  # "RVAUDIT"
_CHECKPOINT_LOCK = 0x5256_4348_4B50_54  # "RVCHKPT"


@dataclass(frozen=True)
class EntryDraft:
    """What a caller records: who did what to whom, for which purpose, with what result.

    `fields` maps field names to their treatment (clear/masked/generalised/denied, or
    written): names, never values.
    """

    action: str
    outcome: str
    channel: str
    kind: str = "access"
    subject_type: str | None = None
    organisation: str | None = None
    client: str | None = None
    user: str | None = None
    on_behalf_of: str | None = None
    purpose: str | None = None
    legal_basis: str | None = None
    consent_id: str | None = None
    resident_id: str | None = None
    resident_pseudonym: str | None = None
    fields: Mapping[str, str] = field(default_factory=dict)
    decision_id: str | None = None
    evaluation_id: str | None = None
    policy_revision: str | None = None
    request_id: str | None = None
    reason: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


# What one string in an entry may hold. Routes bound what callers send (api/http/params.py);
# this is the log's own guarantee, so no caller-supplied value is ever stored whole beyond
# it: a text column keeps its declared length, a string inside `details` at most this.
DETAIL_TEXT_LENGTH = 2000
_CUT = "…"  # marks a value cut to fit; the log never stores the rest


def _bounded(value: str, length: int) -> str:
    return value if len(value) <= length else value[: length - 1] + _CUT


def _bounded_details(value: Any) -> Any:
    if isinstance(value, str):
        return _bounded(value, DETAIL_TEXT_LENGTH)
    if isinstance(value, Mapping):
        return {_bounded(str(k), DETAIL_TEXT_LENGTH): _bounded_details(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_bounded_details(v) for v in value]
    return value


def operator_event(
    action: str,
    actor: str | None,
    details: Mapping[str, Any],
    *,
    channel: str = "cli",
    **extra: Any,
) -> EntryDraft:
    """An operator's operation (an upgrade, a restore, a mandate granted) as the log records
    it: an allowed event by `actor`, on the cli channel unless the admin API made it."""
    return EntryDraft(
        action=action,
        outcome="allowed",
        channel=channel,
        kind="event",
        user=actor,
        subject_type="operator",
        details=details,
        **extra,
    )


# Declared lengths of the log's text columns; PostgreSQL would refuse a longer value (and
# the access with it), SQLite would store it whole.
_TEXT_LENGTHS: dict[str, int] = {
    column.name: int(column.type.length)
    for column in AuditEntry.__table__.columns
    if isinstance(column.type, String)
    and column.type.length
    and column.name in ENTRY_COLUMN_NAMES[2:]
}
_FIELD_NAME_LENGTH = 64


_last_stamp = 0
_stamp_lock = threading.Lock()


def _next_entry_id() -> str:
    """Ids that sort in the order entries were made in this process (then random bits).

    The integrator orders pending entries by (recorded_at, entry_id), so the entries of one
    request or one batch keep their order in the tree.
    """
    global _last_stamp  # noqa: PLW0603 - one process-wide monotonic counter
    with _stamp_lock:
        _last_stamp = max(time.time_ns(), _last_stamp + 1)
        stamp = _last_stamp
    return f"ae_{stamp:016x}{secrets.token_hex(6)}"


class DbNodeReader:
    """Answers perfect-subtree hashes from the stored ones, with one query per proof.

    Level 0 is the leaves' own hashes, read from `audit_leaves`; `audit_tree_nodes` holds
    the levels above. Every node is folded from the kept levels (`audit.merkle.STRATUM`),
    whether or not its own level is still stored: so the same reads serve a tree before
    and after migration 0026 dropped the levels between.
    """

    def __init__(self, session: Session) -> None:
        self._session = session

    def get_nodes(self, coords: Sequence[Coord]) -> dict[Coord, bytes]:
        spans = kept_spans(coords)
        if not spans:
            return {}
        # One OR of primary-key ranges with bound parameters: both databases turn it into
        # index range scans. Written as text because compiling a SQLAlchemy expression of
        # ~30 terms cost ten times the query itself (bench/bench_audit.py).
        params: dict[str, int] = {}
        leaves: list[str] = []
        nodes: list[str] = []
        for k, (level, first, last) in enumerate(spans):
            params[f"a{k}"], params[f"b{k}"] = first, last
            if level == 0:
                leaves.append(f"leaf_index BETWEEN :a{k} AND :b{k}")
            else:
                params[f"l{k}"] = level
                nodes.append(f'(level = :l{k} AND "index" BETWEEN :a{k} AND :b{k})')
        # Fixed fragments only; every value is a bound parameter.
        parts = []
        if leaves:
            where = " OR ".join(leaves)
            parts.append(f"SELECT 0, leaf_index, leaf_hash FROM audit_leaves WHERE {where}")  # noqa: S608
        if nodes:
            where = " OR ".join(nodes)
            parts.append(f'SELECT level, "index", hash FROM audit_tree_nodes WHERE {where}')  # noqa: S608
        rows = self._session.execute(text(" UNION ALL ".join(parts)), params)
        return nodes_from_kept(coords, {(level, index): digest for level, index, digest in rows})


class AuditLog:
    def __init__(self, keyring: Keyring, origin: str) -> None:
        self.keyring = keyring
        self.origin = origin

    # -- recording ---------------------------------------------------------------------

    def record(self, session: Session, drafts: Sequence[EntryDraft]) -> list[str]:
        """Insert entries in the caller's transaction, all in one statement.

        Raises AuditUnavailable if the database refuses: the caller must then not
        return the data the entries would have recorded.
        """
        if not drafts:
            return []
        now = utcnow()
        rows: list[dict[str, Any]] = []
        for draft in drafts:
            row: dict[str, Any] = {
                "entry_id": _next_entry_id(),
                "recorded_at": now,
                **{name: getattr(draft, name) for name in ENTRY_COLUMN_NAMES[2:]},
            }
            for name, length in _TEXT_LENGTHS.items():
                if isinstance(row[name], str):
                    row[name] = _bounded(row[name], length)
            row["fields"] = {
                _bounded(k, _FIELD_NAME_LENGTH): _bounded(v, _FIELD_NAME_LENGTH)
                for k, v in draft.fields.items()
            }
            row["details"] = _bounded_details(dict(draft.details))
            rows.append(row)
        try:
            # The driver's own bulk path (COPY on PostgreSQL): a Core executemany built a
            # parameter dict per row, and PostgreSQL got a statement per row.
            bulk_insert(session, _ENTRIES, rows)
            bulk_insert(
                session,
                _QUEUE,
                [{"entry_id": r["entry_id"], "recorded_at": r["recorded_at"]} for r in rows],
            )
        except SQLAlchemyError as exc:
            log.error("audit.write_failed", error=type(exc).__name__, entries=len(rows))
            raise AuditUnavailable("the audit entry could not be written") from exc
        return [row["entry_id"] for row in rows]

    # -- integration -------------------------------------------------------------------

    def tree_size(self, session: Session) -> int:
        """Leaf indexes are dense, so the size is the largest index + 1: one index probe,
        where count(*) would scan millions of rows on every proof request."""
        last = session.scalar(select(func.max(AuditLeaf.leaf_index)))
        return 0 if last is None else int(last) + 1

    def integrate(self, sessions: sessionmaker[Session], batch_size: int = 10_000) -> int:
        """Give committed entries the next leaf indexes and store the new tree nodes.

        Returns how many entries were integrated. Only one integrator runs at a time
        (`lock_writers`): another returns at once on PostgreSQL, and waits on SQLite.
        """
        total = 0
        while True:
            with sessions() as session, session.begin():
                if not lock_writers(session, _INTEGRATOR_LOCK, wait=False):
                    return total  # another integrator is at work
                size = self.tree_size(session)
                pending = session.execute(
                    select(*ENTRY_COLUMNS)
                    .select_from(AuditQueue)
                    .join(
                        AuditEntry,
                        and_(
                            AuditEntry.entry_id == AuditQueue.entry_id,
                            AuditEntry.recorded_at == AuditQueue.recorded_at,
                        ),
                    )
                    .order_by(AuditQueue.recorded_at, AuditQueue.entry_id)
                    .limit(batch_size)
                ).all()
                if not pending:
                    return total
                compact = CompactRange.from_reader(DbNodeReader(session), size)
                # Until a contract has run, older nodes may still serve proofs from what it
                # drops: write it as they did. Before 0026, every level above 0 and the
                # leaf's integration time; before 0024 (so only then), level 0 too.
                older = not migration_applied(session.connection(), TREE_IN_STRATA)
                level_zero = older and not migration_applied(
                    session.connection(), LEAVES_ARE_LEVEL_ZERO
                )
                now = utcnow()
                leaves: list[dict[str, Any]] = []
                nodes: list[dict[str, Any]] = []
                for offset, values in enumerate(pending):
                    digest = leaf_hash(canonical_of(values))
                    leaf = {"leaf_index": size + offset, "entry_id": values[0], "leaf_hash": digest}
                    leaves.append({**leaf, "integrated_at": now} if older else leaf)
                    nodes += [
                        {"level": level, "index": index, "hash": node}
                        for (level, index), node in compact.append(digest)
                        if (level_zero if level == 0 else older or is_kept_level(level))
                    ]
                session.execute(insert(_OLDER_LEAVES if older else _LEAVES), leaves)
                if nodes:  # an odd leaf completes no node above it
                    session.execute(insert(AuditTreeNode), nodes)
                session.execute(
                    delete(AuditQueue).where(
                        AuditQueue.entry_id.in_([leaf["entry_id"] for leaf in leaves])
                    )
                )
                total += len(leaves)
            if len(pending) < batch_size:
                return total

    # -- checkpoints -------------------------------------------------------------------

    @property
    def public_key(self) -> bytes:
        return self.keyring.signing_public_key(SIGNING_KEY_NAME)

    @property
    def verifier_key(self) -> str:
        return verifier_key(self.origin, self.public_key)

    def latest_checkpoint(self, session: Session) -> AuditCheckpoint | None:
        return session.scalars(
            select(AuditCheckpoint).order_by(AuditCheckpoint.tree_size.desc()).limit(1)
        ).first()

    def checkpoint(
        self, sessions: sessionmaker[Session], *, force: bool = False
    ) -> AuditCheckpoint | None:
        """Integrate, then sign a checkpoint if the tree grew (or if forced and none exists)."""
        self.integrate(sessions)
        with sessions() as session, session.begin():
            # Two signers (the background loop, a forced checkpoint, another node) would
            # both sign the same size; the second waits, then finds it signed.
            lock_writers(session, _CHECKPOINT_LOCK)
            size = self.tree_size(session)
            latest = self.latest_checkpoint(session)
            if latest is not None and latest.tree_size >= size:
                return latest if force else None
            root = read_root(DbNodeReader(session), size)
            text_ = sign_checkpoint_with(
                self.origin,
                size,
                root,
                self.public_key,
                lambda message: self.keyring.sign(SIGNING_KEY_NAME, message),
            )
            head = AuditCheckpoint(
                tree_size=size, root_hash=root, checkpoint=text_, signed_at=utcnow()
            )
            session.add(head)
        log.info("audit.checkpoint_signed", tree_size=size)
        return head

    # -- proofs ------------------------------------------------------------------------

    def inclusion_proof(self, session: Session, index: int, tree_size: int) -> list[bytes]:
        if not 0 <= index < tree_size or tree_size > self.tree_size(session):
            raise ProofUnavailable("no such index or tree size")
        return read_inclusion_proof(DbNodeReader(session), index, tree_size)

    def consistency_proof(self, session: Session, first: int, second: int) -> list[bytes]:
        if not 0 < first <= second or second > self.tree_size(session):
            raise ProofUnavailable("no such tree sizes")
        return read_consistency_proof(DbNodeReader(session), first, second)

    def entry_at(self, session: Session, index: int) -> AuditEntry | None:
        return session.scalars(
            select(AuditEntry)
            .join(AuditLeaf, AuditLeaf.entry_id == AuditEntry.entry_id)
            .where(AuditLeaf.leaf_index == index)
        ).first()
