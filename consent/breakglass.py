"""Break-glass: an emergency access beyond normal policy, for one resident, on the record.

A worker who must act at once (a rescue, a resident found unwell) opens a grant with a
written justification. The policy's break-glass purpose (`emergency-rescue`, PIPL Art.
13(1)(4)) then lets that worker read that one resident, whoever's grid they live in,
until the grant expires. Each access is flagged in the audit log, the resident is told
(Art. 18(2): notice after the emergency), and the grant waits in the auditors' queue
until one of them marks it justified or not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from audit import AuditLog, EntryDraft
from consent.errors import ConsentError
from consent.models import BreakGlassGrant, ResidentNotification
from vault.i18n import Message
from vault.models import Resident, new_id, utcnow
from vault.pseudonyms import is_pseudonym

__all__ = [
    "MIN_JUSTIFICATION",
    "OPENED",
    "BreakGlass",
    "BreakGlassConflict",
    "BreakGlassError",
    "BreakGlassNotFound",
    "Named",
    "Opener",
    "notifications_of",
]

MIN_JUSTIFICATION = 10  # characters: a reason, not a tick box
MAX_MINUTES = 240  # the default of VAULT_BREAK_GLASS_MAX_MINUTES
REVIEW_OUTCOMES = ("justified", "unjustified")
GIVEN_LENGTH = 64  # an id as a worker gave it, kept in the log: a pseudonym fits
OPENED = "break_glass.opened"


class BreakGlassError(ConsentError):
    """A grant asked for with a field that will not do (`field` names it)."""

    slug = "validation-error"


class BreakGlassNotFound(BreakGlassError):
    """No such grant (to review)."""

    slug = "not-found"


class BreakGlassConflict(BreakGlassError):
    """The grant is no longer in a state that allows this (already reviewed)."""

    slug = "conflict"


@dataclass(frozen=True)
class Opener:
    """The worker opening a grant, as the gate knows them."""

    user: str
    subject_type: str
    organisation: str | None
    channel: str = "api"
    request_id: str | None = None


@dataclass(frozen=True)
class Named:
    """The resident a worker named, as the route found them.

    `given` is the id as the worker gave it; `resident_id` the vault id it stands for (a
    pseudonym resolved), if any; `reachable` whether the decision's rows hold that
    resident (active, not a decoy). Only a reachable resident gets a grant."""

    given: str
    resident_id: str | None
    reachable: bool


class BreakGlass:
    def __init__(self, audit: AuditLog, minutes: int = 60, most: int = MAX_MINUTES) -> None:
        self.audit = audit
        self.minutes = minutes  # VAULT_BREAK_GLASS_MINUTES
        self.most = most  # VAULT_BREAK_GLASS_MAX_MINUTES

    def open(
        self,
        session: Session,
        opener: Opener,
        named: Named,
        *,
        purpose: str,
        justification: str,
        minutes: int | None = None,
    ) -> BreakGlassGrant:
        """Open a grant; the caller has checked that policy has a break-glass purpose for
        this worker. Records the attempt and tells the resident, in this transaction.

        The answer never says whether the resident exists: an id that names no one the
        worker may reach (nobody, an erased or decoy resident, a pseudonym) gets a grant
        of the same shape that is never stored, so it opens nothing (every read still
        goes through the gate). Its attempt is recorded as denied, for the auditors and
        the insider-abuse rules."""
        reason = justification.strip()
        if len(reason) < MIN_JUSTIFICATION:
            raise BreakGlassError(
                Message("error.break-glass.justification", {"least": MIN_JUSTIFICATION}),
                field="justification",
            )
        span = minutes or self.minutes
        if not 1 <= span <= self.most:
            raise BreakGlassError(
                Message("error.break-glass.minutes", {"most": self.most}), field="minutes"
            )
        resident_id = named.resident_id if named.reachable else None
        now = utcnow()
        grant = BreakGlassGrant(
            id=new_id("bg"),
            user=opener.user,
            subject_type=opener.subject_type,
            organisation=opener.organisation,
            # The id as given: what a stored grant would echo for a vault id.
            resident_id=resident_id or named.given[:GIVEN_LENGTH],
            purpose=purpose,
            justification=reason[:2000],
            created_at=now,
            expires_at=now + timedelta(minutes=span),
            review_status="pending",
            reviewed_by=None,
            reviewed_at=None,
            review_note=None,
        )
        if resident_id is None:
            self.audit.record(session, [self._unmatched(session, opener, named, grant)])
            return grant  # transient: never added to the session
        session.add(grant)
        session.add(
            ResidentNotification(
                id=new_id("nt"),
                resident_id=resident_id,
                kind="break-glass",
                reference=grant.id,
                text_zh=f"{_role_zh(opener.subject_type)}（{opener.user}）因紧急情况查看了您的信息："
                f"{reason[:200]}。审计员将复核此次访问。",
                text_en=f"A {_role_en(opener.subject_type)} ({opener.user}) opened your record in "
                f"an emergency: {reason[:200]}. An auditor will review this access.",
                created_at=now,
            )
        )
        self.audit.record(
            session,
            [
                EntryDraft(
                    action=OPENED,
                    outcome="allowed",
                    channel=opener.channel,
                    kind="access",
                    subject_type=opener.subject_type,
                    organisation=opener.organisation,
                    user=opener.user,
                    purpose=purpose,
                    legal_basis="vital-interests",
                    resident_id=resident_id,
                    request_id=opener.request_id,
                    reason="break-glass",
                    details={
                        "grant": grant.id,
                        "expires_at": grant.expires_at.isoformat(),
                        "justification": reason[:500],
                    },
                )
            ],
        )
        return grant

    @staticmethod
    def _unmatched(
        session: Session, opener: Opener, named: Named, grant: BreakGlassGrant
    ) -> EntryDraft:
        """The attempt on an id that opened nothing, as the gate records a refusal: the id
        as given (bounded), beside the vault id it stands for when a resident has it, so
        that resident sees the attempt; a decoy's is kept apart, as decoy rows are (one
        is a signal: decoys exist only in fingerprinted exports). No decision id: the
        worker may explain their decisions, and that must not tell the two answers apart."""
        row = session.get(Resident, named.resident_id) if named.resident_id else None
        decoy = row is not None and row.is_decoy
        given = named.given[:GIVEN_LENGTH]
        return EntryDraft(
            action=OPENED,
            outcome="denied",
            channel=opener.channel,
            kind="decoy" if decoy else "access",
            subject_type=opener.subject_type,
            organisation=opener.organisation,
            user=opener.user,
            purpose=grant.purpose,
            legal_basis="vital-interests",
            resident_id=row.id if row is not None else None,
            resident_pseudonym=given if is_pseudonym(given) else None,
            request_id=opener.request_id,
            reason="not-found",
            details={
                "grant": grant.id,
                "stored": False,
                "given": given,
                "justification": grant.justification[:500],
                **({"unresolved": True} if row is None else {}),
                **({"decoy": True} if decoy else {}),
            },
        )

    def active(
        self, session: Session, user: str | None, resident_id: str, now: datetime | None = None
    ) -> BreakGlassGrant | None:
        """The worker's unexpired grant for this resident, if any."""
        if not user:
            return None
        return session.scalars(
            select(BreakGlassGrant)
            .where(
                BreakGlassGrant.user == user,
                BreakGlassGrant.resident_id == resident_id,
                BreakGlassGrant.expires_at > (now or utcnow()),
            )
            .order_by(BreakGlassGrant.expires_at.desc())
        ).first()

    def queue(self, session: Session, status: str | None = "pending") -> list[BreakGlassGrant]:
        query = select(BreakGlassGrant).order_by(BreakGlassGrant.created_at)
        if status:
            query = query.where(BreakGlassGrant.review_status == status)
        return list(session.scalars(query.limit(500)))

    def review(
        self,
        session: Session,
        grant_id: str,
        reviewer: str,
        outcome: str,
        note: str | None,
        *,
        request_id: str | None = None,
    ) -> BreakGlassGrant:
        if outcome not in REVIEW_OUTCOMES:
            raise BreakGlassError(Message("error.break-glass.outcome"), field="outcome")
        grant = session.get(BreakGlassGrant, grant_id)
        if grant is None:
            raise BreakGlassNotFound(Message("error.break-glass.not-found"))
        if grant.review_status != "pending":
            raise BreakGlassConflict(Message("error.break-glass.reviewed"))
        grant.review_status = outcome
        grant.reviewed_by = reviewer
        grant.reviewed_at = utcnow()
        grant.review_note = (note or "")[:2000] or None
        self.audit.record(
            session,
            [
                EntryDraft(
                    action="break_glass.reviewed",
                    outcome="allowed",
                    channel="api",
                    kind="event",
                    subject_type="auditor",
                    user=reviewer,
                    resident_id=grant.resident_id,
                    reason=outcome,
                    details={"grant": grant.id, "worker": grant.user},
                    request_id=request_id,
                )
            ],
        )
        return grant


def notifications_of(session: Session, resident_ids: Sequence[str]) -> list[ResidentNotification]:
    return list(
        session.scalars(
            select(ResidentNotification)
            .where(ResidentNotification.resident_id.in_(list(resident_ids)))
            .order_by(ResidentNotification.created_at.desc())
            .limit(200)
        )
    )


def _role_zh(kind: str) -> str:
    return {"grid_worker": "网格员", "community_worker": "社区工作者"}.get(kind, "工作人员")


def _role_en(kind: str) -> str:
    return {"grid_worker": "grid worker", "community_worker": "community worker"}.get(
        kind, "worker"
    )
