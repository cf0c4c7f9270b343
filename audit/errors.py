"""Audit-log errors. No HTTP here; `api` maps them (AuditUnavailable -> 503)."""

from __future__ import annotations


class AuditError(Exception):
    """Base of the audit log's errors."""


class AuditUnavailable(AuditError):
    """The entry could not be written: the access it records must not happen."""


class ProofUnavailable(AuditError):
    """No checkpoint covers this entry yet, or the sizes asked for do not exist."""


class VerificationFailed(AuditError):
    """The log does not match itself or its checkpoints; names the first bad place."""

    def __init__(self, message: str, leaf_index: int | None = None) -> None:
        super().__init__(message)
        self.leaf_index = leaf_index
