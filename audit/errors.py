"""Audit-log errors. No HTTP here; `api` maps them by `slug` (AuditUnavailable -> 503)."""

from __future__ import annotations

from typing import ClassVar

from vault.i18n import Message


class AuditError(Exception):
    """Base of the audit log's errors; `message` is what a caller may be told, if anything."""

    slug: ClassVar[str] = "internal-error"
    message: Message | None = None


class AuditUnavailable(AuditError):
    """The entry could not be written: the access it records must not happen."""

    slug = "audit-unavailable"


class ProofUnavailable(AuditError):
    """No checkpoint covers this entry yet, or the sizes asked for do not exist."""

    slug = "proof-unavailable"
    message = Message("error.audit.proof-unavailable")


class InvalidLogCursor(AuditError):
    """A page cursor that this log never gave out (not base64 of a leaf index)."""

    slug = "validation-error"
    field = "cursor"
    message = Message("error.invalid-cursor")


class VerificationFailed(AuditError):
    """The log does not match itself or its checkpoints; names the first bad place."""

    def __init__(self, message: str, leaf_index: int | None = None) -> None:
        super().__init__(message)
        self.leaf_index = leaf_index
