"""Who is asking (`Subject`), in which request (`Access`), and how a subject is built from a
verified token and the database.

Organisations, their jurisdictions, users' roles and guardianships are database records,
the one source of truth; the token only says who the caller is.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from audit import EntryDraft
from vault.accounts import User
from vault.models import (
    Guardianship,
    Organisation,
    OrganisationBuilding,
    OrganisationCommunity,
    utcnow,
)
from vault.stamps import StampedCache, Stamps


@dataclass(frozen=True)
class Subject:
    """Who is asking, as policy sees them; built from the token and the database."""

    type: str
    organisation: str | None = None
    roles: tuple[str, ...] = ()
    communities: tuple[str, ...] = ()
    grids: tuple[str, ...] = ()
    buildings: tuple[str, ...] = ()
    client: str | None = None
    user: str | None = None
    resident_id: str | None = None
    children: tuple[str, ...] = ()

    def policy_input(self) -> dict[str, Any]:
        subject: dict[str, Any] = {
            "type": self.type,
            "roles": list(self.roles),
            "jurisdiction": {
                "communities": list(self.communities),
                "grids": list(self.grids),
                "buildings": list(self.buildings),
            },
        }
        if self.organisation:
            subject["organisation"] = self.organisation
        return subject

    def entry(
        self, action: str, outcome: str, *, channel: str, kind: str, **recorded: Any
    ) -> EntryDraft:
        """An audit entry of something this subject did, with who they are filled in: the
        one place the access layer turns a subject into an entry's actor columns.
        `recorded` is the rest of `audit.EntryDraft` (purpose, resident, fields, ...)."""
        return EntryDraft(
            action=action,
            outcome=outcome,
            channel=channel,
            kind=kind,
            subject_type=self.type,
            organisation=self.organisation,
            client=self.client,
            user=self.user,
            **recorded,
        )


@dataclass(frozen=True)
class Access:
    """One request: who, for what purpose, with which ids for correlation."""

    subject: Subject
    purpose: str | None
    request_id: str
    channel: str = "api"
    justification: str | None = None
    decision_id: str = field(default_factory=lambda: f"dec_{uuid.uuid4().hex}")

    def entry(
        self, action: str, outcome: str, *, kind: str = "access", **recorded: Any
    ) -> EntryDraft:
        """An audit entry of this request: its subject, channel, purpose and request id."""
        return self.subject.entry(
            action,
            outcome,
            channel=self.channel,
            kind=kind,
            purpose=self.purpose,
            request_id=self.request_id,
            **recorded,
        )


class Caller(Protocol):
    """Who a verified token says is calling (`api.oauth.tokens.Principal` is one): a person
    by username, or an organisation's system by client id and organisation."""

    @property
    def client_id(self) -> str: ...

    @property
    def username(self) -> str | None: ...

    @property
    def organisation(self) -> str | None: ...


# Operators are asked about as themselves, so their refusals name them; the policy knows
# no "operator" subject and denies them every purpose (deny by default).
PERSON_ROLES = {"grid_worker", "community_worker", "auditor", "resident", "operator"}


def _organisation_scope(
    session: Session, organisation_id: str
) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    organisation = session.get(Organisation, organisation_id)
    if organisation is None or organisation.retired_at is not None:
        return "unknown", (), ()  # a retired organisation gives its callers nothing
    kind = organisation.type
    communities = tuple(
        session.scalars(
            select(OrganisationCommunity.community_id).where(
                OrganisationCommunity.organisation_id == organisation_id
            )
        )
    )
    buildings = tuple(
        session.scalars(
            select(OrganisationBuilding.building_id).where(
                OrganisationBuilding.organisation_id == organisation_id
            )
        )
    )
    return kind, communities, buildings


def wards_of(session: Session, resident_id: str) -> tuple[str, ...]:
    now = utcnow()
    return tuple(
        session.scalars(
            select(Guardianship.ward_id)
            .where(
                Guardianship.guardian_id == resident_id,
                or_(Guardianship.until.is_(None), Guardianship.until > now),
            )
            .order_by(Guardianship.ward_id)
        )
    )


def subject_for(session: Session, principal: Caller) -> Subject:
    if principal.username is None:
        # A departmental or company system (client credentials): its organisation decides.
        kind, communities, buildings = _organisation_scope(session, principal.organisation or "")
        return Subject(
            type=kind,
            organisation=principal.organisation,
            communities=communities,
            buildings=buildings,
            client=principal.client_id,
        )
    user = session.scalars(select(User).where(User.username == principal.username)).first()
    if user is None or user.role not in PERSON_ROLES:
        return Subject(type="unknown", user=principal.username, client=principal.client_id)
    return _person(session, user, principal.client_id)


class Subjects:
    """Who is asking, as `subject_for` builds them, kept under the change stamp
    (`vault.stamps`): an account, organisation or scope change is seen on the next
    request. A resident is always read afresh, since a guardianship ends by its date."""

    def __init__(self, sessions: Callable[[], AbstractContextManager[Session]], stamps: Stamps):
        self._sessions = sessions
        self._stamps = stamps
        self._cache: StampedCache[tuple[str | None, str, str | None], Subject] = StampedCache()

    def of(self, principal: Caller) -> Subject:
        def load() -> Subject:
            with self._sessions() as session:
                return subject_for(session, principal)

        key = (principal.username, principal.client_id, principal.organisation)
        return self._cache.lookup(
            key, self._stamps.current(), load, keep=lambda s: s.type != "resident"
        )


def organisation_subject(session: Session, organisation_id: str) -> Subject:
    """An organisation's system as policy sees it (what its client-credentials token gets)."""
    kind, communities, buildings = _organisation_scope(session, organisation_id)
    return Subject(
        type=kind, organisation=organisation_id, communities=communities, buildings=buildings
    )


def visibility_subjects(session: Session, community_id: str | None) -> list[Subject]:
    """Everyone who might read a resident of `community_id`: every organisation, and the
    grid and community workers of that community (the dry run asks policy about each)."""
    subjects = [
        organisation_subject(session, org_id)
        for org_id in session.scalars(select(Organisation.id).order_by(Organisation.id))
    ]
    workers = session.scalars(
        select(User)
        .where(User.role.in_(["grid_worker", "community_worker"]), User.disabled_at.is_(None))
        .order_by(User.username)
    )
    for user in workers:
        if (user.jurisdiction or {}).get("community") == community_id:
            subjects.append(_person(session, user, None))
    return subjects


def _person(session: Session, user: User, client_id: str | None) -> Subject:
    if user.organisation_id is not None and user.role != "resident":
        organisation = session.get(Organisation, user.organisation_id)
        if organisation is None or organisation.retired_at is not None:
            # A worker of a retired organisation serves no one through it.
            return Subject(type="unknown", user=user.username, client=client_id)
    jurisdiction = user.jurisdiction or {}
    community = jurisdiction.get("community")
    return Subject(
        type=user.role,
        organisation=user.organisation_id,
        roles=(user.role,),
        communities=(community,) if community else (),
        grids=tuple(jurisdiction.get("grids") or ()),
        buildings=tuple(jurisdiction.get("buildings") or ()),
        client=client_id,
        user=user.username,
        resident_id=user.resident_id,
        children=wards_of(session, user.resident_id) if user.resident_id else (),
    )
