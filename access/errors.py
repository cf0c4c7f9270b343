"""Refusals of an access, as domain errors with no HTTP in sight: each class names the
problem it is (`slug`, a type docs/api.md lists) and carries its catalogue message;
`api.http.problems` answers them all with one handler.
"""

from __future__ import annotations

from typing import ClassVar, Final

from policies import Decision
from vault.i18n import Message

NOT_FOUND: Final = Message("error.not-found")


class GateError(Exception):
    """A refusal: the problem docs/api.md names for it (`slug`), what to tell the caller
    (`message`, a catalogue message), the decision when policy was asked, the decision id
    of the refused access (`Access.decision_id`, set where it is raised) and, for a refusal
    that passes, how many seconds to wait (`retry_after`)."""

    slug: ClassVar[str] = "policy-denied"

    def __init__(
        self,
        message: Message,
        decision: Decision | None = None,
        *,
        decision_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message.text("en"))
        self.message = message
        self.decision = decision
        self.decision_id = decision_id
        self.retry_after = retry_after


class PurposeRequired(GateError):
    """No purpose was declared: every access names why it is made."""

    slug = "purpose-required"


class UnknownPurpose(GateError):
    """The purpose is well formed but not in the registry; the attempt is still recorded."""

    slug = "unknown-purpose"


class PolicyDenied(GateError):
    """Policy refuses this caller the action for this purpose (the decision says why)."""

    slug = "policy-denied"


class ConsentRequired(GateError):
    slug = "consent-required"  # the purpose rests on consent, and no consent covers it


class NotInScope(GateError):
    """404: the same whether the resident does not exist or is outside the caller's scope."""

    slug = "not-found"

    def __init__(self, decision: Decision | None, *, decision_id: str | None = None) -> None:
        super().__init__(NOT_FOUND, decision, decision_id=decision_id)


class JustificationRequired(GateError):
    """The purpose asks for a written reason (`Justification`) and none was given; the
    reason is kept in the access's audit entry, for the auditors' review."""

    slug = "justification-required"


class InvalidCursor(GateError):
    """A page cursor this listing did not hand out."""

    slug = "validation-error"
    field = "cursor"


class Suspended(GateError):
    """The caller is suspended pending review after an insider-abuse alert."""

    slug = "suspended"


class RateLimited(GateError):
    slug = "rate-limited"  # `retry_after` says when to try again


class BreakGlassRequired(GateError):
    """A break-glass purpose without an active grant for this worker and resident."""

    slug = "break-glass-required"


class NotAResident(GateError):
    """A route for residents' own records, called by someone who is not a resident."""

    slug = "insufficient-scope"

    def __init__(self) -> None:
        super().__init__(Message("error.not-a-resident"))


class NotAnOperator(GateError):
    """The admin API, called by someone who is not an operator (scope admin:write alone is
    not enough: an account with the operator role must hold it)."""

    slug = "insufficient-scope"

    def __init__(self) -> None:
        super().__init__(Message("error.not-an-operator"))
