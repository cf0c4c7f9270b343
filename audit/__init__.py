"""The access log: append-only entries, an RFC 6962 Merkle tree, signed checkpoints, proofs."""

from audit import models as models  # registers the tables with the shared metadata
from audit.errors import AuditError, AuditUnavailable, ProofUnavailable, VerificationFailed
from audit.log import AuditLog, EntryDraft, operator_event

__all__ = [
    "AuditError",
    "AuditLog",
    "AuditUnavailable",
    "EntryDraft",
    "ProofUnavailable",
    "VerificationFailed",
    "operator_event",
]
