"""Domain errors of the vault. No HTTP here: `api` maps these to problem details."""

from __future__ import annotations

from dataclasses import dataclass


class VaultError(Exception):
    """Base of every error the vault raises on purpose."""


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
    """Raised by a validator for one value; the caller attaches the field name."""

    def __init__(self, code: str, message_zh: str, message_en: str) -> None:
        super().__init__(message_en)
        self.code = code
        self.message_zh = message_zh
        self.message_en = message_en


class ValidationFailed(VaultError):
    """A record failed validation; nothing was written."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message_en}" for p in problems))
        self.problems = problems


class UnknownField(VaultError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown field {name!r}")
        self.name = name


class ResidentNotFound(VaultError):
    def __init__(self, resident_id: str) -> None:
        super().__init__("resident not found")
        self.resident_id = resident_id


class ResidentErased(ResidentNotFound):
    """The resident's data key was destroyed; their fields can never be read again."""


class DecryptionFailed(VaultError):
    """A ciphertext did not open: tampered, moved to another row or field, or its key is gone."""


class KeyNotFound(VaultError):
    """The keyring has no key with this id (destroyed, or from another vault)."""


class StaleRecord(VaultError):
    """The record changed since the caller read it; nothing was written."""

    def __init__(self, resident_id: str) -> None:
        super().__init__("the record was changed by someone else; read it again")
        self.resident_id = resident_id
