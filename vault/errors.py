"""Domain errors of the vault. No HTTP here: `api` maps these to problem details.

Each error class names the problem it is (`slug`, the types docs/api.md lists) and carries
what to tell the caller as a `vault.i18n.Message` (an id in the catalogue and its values),
never two strings side by side; `api.http.problems` shows it in the request's language.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from vault.i18n import Message

GIVEN_TEXT = "text.given"


def given_text(zh: str, en: str) -> Message:
    """Text that arrives already written in both languages (a validator's composed message,
    a policy bundle's reason): a `Message` all the same, shown through the catalogue's
    `text.given` entry, so every error is read one way."""
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
    """One field's validation failure, in both languages the product speaks."""

    field: str
    code: str
    message_zh: str
    message_en: str

    def message(self, lang: str = "zh") -> str:
        return self.message_en if lang.startswith("en") else self.message_zh


class InvalidValue(VaultError):
    """Raised by a validator for one value; the caller attaches the field name.

    The validators compose their texts in both languages (`vault.validators`), so the
    message is `given_text`; `message_zh`/`message_en` read it back for them."""

    slug = "validation-error"
    field = ""

    def __init__(self, code: str, message_zh: str, message_en: str) -> None:
        super().__init__(message_en)
        self.code = code
        self.message: Message = given_text(message_zh, message_en)

    @property
    def message_zh(self) -> str:
        return self.message.text("zh")

    @property
    def message_en(self) -> str:
        return self.message.text("en")


class ValidationFailed(VaultError):
    """A record failed validation; nothing was written. The problems are the message."""

    slug = "validation-error"

    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message_en}" for p in problems))
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
