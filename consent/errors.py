"""Domain errors of consent: what went wrong, as a catalogue message, with no HTTP in sight.

`api.http.problems` maps each class to its problem (`slug` names the problem type) and
shows `message` in the request's language; `field` names the request field at fault.
"""

from __future__ import annotations

from typing import ClassVar

from vault.i18n import Message


class ConsentError(Exception):
    """A consent operation that cannot be done as asked; `message` says why (a
    `vault.i18n.Message`, `error.consent.*`)."""

    slug: ClassVar[str] = "validation-error"

    def __init__(self, message: Message, *, field: str | None = None) -> None:
        super().__init__(message.text("en"))
        self.message: Message = message
        self.field = field


class InvalidConsent(ConsentError):
    """The request names an unknown purpose, recipient or field, or a time in the past."""

    slug = "validation-error"


class ConsentNotFound(ConsentError):
    """No such consent or request, or not the caller's to see (the same answer for both)."""

    slug = "not-found"


class ConsentConflict(ConsentError):
    """The record is no longer in a state that allows this (revoked, superseded, answered)."""

    slug = "conflict"
