"""Domain errors of consent: what went wrong, in both languages, with no HTTP in sight.

`api.http.routes.consent` maps them to problem details (`slug` names the problem type).
"""

from __future__ import annotations


class ConsentError(Exception):
    """A consent operation that cannot be done as asked."""

    slug = "validation-error"

    def __init__(self, zh: str, en: str, field: str | None = None) -> None:
        super().__init__(en)
        self.zh = zh
        self.en = en
        self.field = field

    def message(self, lang: str = "zh") -> str:
        return self.en if lang.startswith("en") else self.zh


class InvalidConsent(ConsentError):
    """The request names an unknown purpose, recipient or field, or a time in the past."""

    slug = "validation-error"


class ConsentNotFound(ConsentError):
    """No such consent or request, or not the caller's to see (the same answer for both)."""

    slug = "not-found"


class ConsentConflict(ConsentError):
    """The record is no longer in a state that allows this (revoked, superseded, answered)."""

    slug = "conflict"
