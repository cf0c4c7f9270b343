"""Verify the whole log: every entry, every leaf, every stored node, every checkpoint.

What it catches, and how it names the place:
- a column changed after the fact: the bytes its columns make no longer hash to its leaf;
- a leaf hash changed, or rows reordered or inserted: the recomputed tree disagrees with
  the stored tree nodes, or with a signed checkpoint;
- a stored tree node changed (what proofs are served from): it differs from the one the
  leaves make;
- a row removed: a gap in the leaf indexes, or a leaf whose entry is gone;
- a checkpoint forged or altered: its signature fails under the log's public key.

It needs only the public key and what it reads, so an auditor can run it against a copy.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from audit.checkpoint import CheckpointError, verify_checkpoint
from audit.encoding import canonical_of
from audit.errors import VerificationFailed
from audit.merkle import MemoryTree, leaf_hash, verify_consistency
from audit.models import ENTRY_COLUMNS, AuditCheckpoint, AuditEntry, AuditLeaf, AuditTreeNode
from audit.partitions import archived_leaves


@dataclass
class VerifyReport:
    entries: int = 0
    checkpoints: int = 0
    external_checked: bool = False
    latest_size: int = 0
    archived: int = 0  # entries whose bytes are in archive files, checked by their leaves
    notes: list[str] = field(default_factory=list)


def _leaves(session: Session, batch: int) -> Iterator[tuple[int, bytes, bytes | None]]:
    """(leaf index, leaf hash, the entry's canonical bytes or None if it is gone), in order.

    Plain columns rather than ORM objects: verification reads every row of the log. A
    server-side cursor streams it and is closed even when verification stops early.
    """
    with session.execute(
        select(AuditLeaf.leaf_index, AuditLeaf.leaf_hash, *ENTRY_COLUMNS)
        .outerjoin(AuditEntry, AuditEntry.entry_id == AuditLeaf.entry_id)
        .order_by(AuditLeaf.leaf_index)
        .execution_options(yield_per=batch)
    ) as rows:
        for index, digest, *values in rows:
            # No entry_id: the outer join found no entry for the leaf.
            yield index, digest, canonical_of(values) if values[0] is not None else None


def verify_log(
    session: Session,
    verifier_key: str,
    *,
    external_checkpoint: str | None = None,
    batch: int = 5_000,
) -> VerifyReport:
    """Raise VerificationFailed at the first inconsistency; return a report otherwise."""
    report = VerifyReport()
    tree = MemoryTree()
    # Entries of detached partitions are in archive files; their leaves stay here, and a
    # signed manifest per archive says which they are (audit.partitions).
    archived = archived_leaves(session, verifier_key)
    for expected, (index, stored_hash, canonical) in enumerate(_leaves(session, batch)):
        if index != expected:
            raise VerificationFailed(
                f"leaf {expected} is missing (next stored is {index})", expected
            )
        if archived.claim(index, stored_hash) and canonical is None:
            tree.append(stored_hash)
            continue
        if canonical is None:
            raise VerificationFailed(f"the entry of leaf {index} has been removed", index)
        # The bytes are made from the columns: a column changed no longer matches the leaf.
        digest = leaf_hash(canonical)
        if digest != stored_hash:
            raise VerificationFailed(
                f"entry {index} was altered: its columns no longer match its leaf hash", index
            )
        tree.append(digest)
    archived.check_complete()
    report.entries = tree.size
    report.archived = archived.entries
    if len(archived):
        report.notes.append(
            f"{archived.entries} entries are archived in {len(archived)} detached partitions"
        )
    _check_stored_nodes(session, tree, batch)
    previous: tuple[int, bytes] | None = None
    for head in session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.tree_size)):
        size, root = _check_checkpoint(head.checkpoint, verifier_key, tree)
        if (size, root) != (head.tree_size, head.root_hash):
            raise VerificationFailed(
                f"checkpoint {head.tree_size}: stored columns disagree with its signed text"
            )
        if previous is not None:
            proof = tree.consistency_proof(previous[0], size)
            if not verify_consistency(previous[0], size, previous[1], root, proof):
                raise VerificationFailed(f"checkpoints {previous[0]} and {size} are inconsistent")
        previous = (size, root)
        report.checkpoints += 1
        report.latest_size = size
    if external_checkpoint is not None:
        size, _ = _check_checkpoint(external_checkpoint, verifier_key, tree)
        report.external_checked = True
        report.notes.append(f"external checkpoint of size {size} matches")
    return report


def _check_checkpoint(text: str, verifier_key: str, tree: MemoryTree) -> tuple[int, bytes]:
    try:
        checkpoint = verify_checkpoint(text, verifier_key)
    except CheckpointError as exc:
        raise VerificationFailed(f"a checkpoint's signature does not verify: {exc}") from exc
    if checkpoint.size > tree.size:
        raise VerificationFailed(
            f"checkpoint of size {checkpoint.size} covers entries the log no longer has "
            f"(it holds {tree.size})",
            tree.size,
        )
    if tree.root(checkpoint.size) != checkpoint.root:
        raise VerificationFailed(
            f"the log's first {checkpoint.size} entries no longer hash to the signed root",
            _first_difference_hint(tree, checkpoint.size),
        )
    return checkpoint.size, checkpoint.root


def _check_stored_nodes(session: Session, tree: MemoryTree, batch: int) -> None:
    """Every stored subtree hash (what proofs are served from) against the tree the
    leaves make: a node changed would make proofs that fail against signed heads."""
    with session.execute(
        select(AuditTreeNode.level, AuditTreeNode.index, AuditTreeNode.hash)
        .order_by(AuditTreeNode.level, AuditTreeNode.index)
        .execution_options(yield_per=batch)
    ) as rows:
        for level, index, digest in rows:
            if tree.get_node((level, index)) == digest:
                continue
            first, last = index << level, ((index + 1) << level) - 1
            if last >= tree.size:
                raise VerificationFailed(
                    f"the stored tree node ({level}, {index}) covers entries the log does"
                    f" not have (it holds {tree.size})"
                )
            raise VerificationFailed(
                f"the stored tree node ({level}, {index}) over entries {first} to {last}"
                " differs from the one their leaves make",
                first,
            )


def _first_difference_hint(tree: MemoryTree, size: int) -> int | None:
    """Without the original leaves we cannot name the entry; the size bounds it."""
    return None if size == 0 else size - 1
