"""Domain errors of the vault. No HTTP here: `api` maps these to problem details.

Each error class names the problem it is (`slug`, the types docs/api.md lists) and carries
what to tell the caller as a `vault.i18n.Message` (an id in the catalogue and its values),
never two strings side by side; `api.http.problems` shows it in the request's language.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from vault.i18n import DEFAULT_LANG, Message

GIVEN_TEXT = "text.given"


def given_text(zh: str, en: str) -> Message:
    """Text that arrives from outside the code already written in both languages (a policy
    bundle's reasons, which a district writes in its Rego data): a `Message` all the same,
    shown through the catalogue's `text.given` entry, so every error is read one way. Text
    the code writes itself has a catalogue id of its own instead."""
    return Message(GIVEN_TEXT, {"zh": zh, "en": en})


class VaultError(Exception):
    """Base of every error the vault raises on purpose. Without a message of its own the
    caller is told nothing more than the problem's title (an internal error says no more)."""

    slug: ClassVar[str] = "internal-error"
    message: Message | None = None


class CatalogueError(VaultError):
    """The field catalogue file is malformed."""


class ConfigurationError(VaultError):
    """The service cannot start as configured (missing keyring, bad URL, ...)."""


@dataclass(frozen=True)
class FieldProblem:
    """One field's validation failure: its code and what to tell the caller."""

    field: str
    code: str
    detail: Message

    def message(self, lang: str = DEFAULT_LANG) -> str:
        return self.detail.text(lang)


class InvalidValue(VaultError):
    """Raised by a validator for one value; the caller attaches the field name."""

    slug = "validation-error"
    field = ""

    def __init__(self, code: str, message: Message) -> None:
        super().__init__(message.text("en"))
        self.code = code
        self.message: Message = message


class ValidationFailed(VaultError):
    """A record failed validation; nothing was written. The problems are the message."""

    slug = "validation-error"

    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message('en')}" for p in problems))
        self.problems = problems


class UnknownField(VaultError):
    slug = "validation-error"

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown field {name!r}")
        self.name = name
        self.field = name
        self.message: Message = Message("error.vault.unknown-field")


class ResidentNotFound(VaultError):
    """404, in the same words as a resident outside the caller's scope (`NotInScope`)."""

    slug = "not-found"

    def __init__(self, resident_id: str) -> None:
        super().__init__("resident not found")
        self.resident_id = resident_id
        self.message: Message = Message("error.not-found")


class ResidentErased(ResidentNotFound):
    """The resident's data key was destroyed; their fields can never be read again."""


class DecryptionFailed(VaultError):
    """A ciphertext did not open: tampered, moved to another row or field, or its key is gone."""


class KeyNotFound(VaultError):
    """The keyring has no key with this id (destroyed, or from another vault)."""


class StaleRecord(VaultError):
    """The record changed since the caller read it; nothing was written."""

    slug = "conflict"

    def __init__(self, resident_id: str) -> None:
        super().__init__("the record was changed by someone else; read it again")
        self.resident_id = resident_id
        self.message: Message = Message("error.vault.stale-record")


class DistrictError(VaultError):
    """A change to the district's policy data (its purposes or mandates) that cannot be made
    as asked; nothing was written."""

    slug: ClassVar[str] = "validation-error"

    def __init__(self, message: Message) -> None:
        super().__init__(message.text("en"))
        self.message = message


class DistrictConflict(DistrictError):
    slug = "conflict"  # e.g. a purpose code that is already registered
