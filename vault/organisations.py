"""The district's organisations as data: departments, residents' committees, property
companies and owners' committees, each with the communities or buildings it serves.

An organisation's kind is the policy's subject type (what its mandates and defaults are
written for), so only the kinds the policy knows are accepted. Nothing is deleted: a
retired organisation keeps its id for the audit entries that name it, and its systems
and its workers are asked about as nobody (`access.subjects`: deny by default). Each
change is one call in the caller's transaction, which records its audit entry too
(`api.cli.orgs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from vault.i18n import Message
from vault.models import (
    ORGANISATION_TYPES,
    Building,
    Community,
    Organisation,
    OrganisationBuilding,
    OrganisationCommunity,
    utcnow,
)
from vault.places import NAME_LENGTH, PLACE_ID, PlaceConflict, PlaceError

KINDS: Final = ORGANISATION_TYPES


@dataclass(frozen=True)
class OrganisationRow:
    id: str
    kind: str
    name_zh: str
    name_en: str
    communities: tuple[str, ...]
    buildings: tuple[str, ...]
    retired: bool

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "name": {"zh": self.name_zh, "en": self.name_en},
            "communities": list(self.communities),
            "buildings": list(self.buildings),
            "retired": self.retired,
        }


def add_organisation(
    session: Session,
    organisation_id: str,
    kind: str,
    name: str,
    *,
    name_en: str | None = None,
    communities: Sequence[str] = (),
    buildings: Sequence[str] = (),
) -> OrganisationRow:
    """Add an organisation serving the communities and buildings named (each active)."""
    if kind not in KINDS:
        raise PlaceError(Message("error.org.kind", {"kind": kind, "kinds": ", ".join(KINDS)}))
    if not PLACE_ID.match(organisation_id):
        raise PlaceError(Message("error.place.id", {"id": organisation_id}))
    names = [n.strip() for n in (name, name_en or name)]
    if any(not n or len(n) > NAME_LENGTH for n in names):
        raise PlaceError(Message("error.place.name", {"most": NAME_LENGTH}))
    if session.get(Organisation, organisation_id) is not None:
        raise PlaceConflict(Message("error.place.taken", {"id": organisation_id}))
    for place_id in communities:
        _active(session.get(Community, place_id), "community", place_id)
    for place_id in buildings:
        _active(session.get(Building, place_id), "building", place_id)
    session.add(Organisation(id=organisation_id, type=kind, name_zh=names[0], name_en=names[1]))
    session.flush()
    session.add_all(
        OrganisationCommunity(organisation_id=organisation_id, community_id=c)
        for c in dict.fromkeys(communities)
    )
    session.add_all(
        OrganisationBuilding(organisation_id=organisation_id, building_id=b)
        for b in dict.fromkeys(buildings)
    )
    session.flush()
    return _row(session, session.get_one(Organisation, organisation_id))


def change_organisation(
    session: Session,
    organisation_id: str,
    *,
    name: str,
    name_en: str | None = None,
    communities: Sequence[str] = (),
    buildings: Sequence[str] = (),
) -> OrganisationRow:
    """Rename an organisation in service, or change the places it serves (its kind, which
    its mandates are written for, never changes: retire it and add another)."""
    organisation = session.get(Organisation, organisation_id)
    if organisation is None:
        raise PlaceError(Message("error.org.unknown", {"id": organisation_id}))
    if organisation.retired_at is not None:
        raise PlaceConflict(Message("error.org.retired", {"id": organisation_id}))
    names = [n.strip() for n in (name, name_en or name)]
    if any(not n or len(n) > NAME_LENGTH for n in names):
        raise PlaceError(Message("error.place.name", {"most": NAME_LENGTH}))
    for place_id in communities:
        _active(session.get(Community, place_id), "community", place_id)
    for place_id in buildings:
        _active(session.get(Building, place_id), "building", place_id)
    organisation.name_zh, organisation.name_en = names
    for link in (OrganisationCommunity, OrganisationBuilding):
        session.execute(delete(link).where(link.organisation_id == organisation_id))
    session.add_all(
        OrganisationCommunity(organisation_id=organisation_id, community_id=c)
        for c in dict.fromkeys(communities)
    )
    session.add_all(
        OrganisationBuilding(organisation_id=organisation_id, building_id=b)
        for b in dict.fromkeys(buildings)
    )
    session.flush()
    return _row(session, organisation)


def _active(place: Community | Building | None, kind: str, place_id: str) -> None:
    if place is None:
        raise PlaceError(Message("error.place.unknown", {"kind": kind, "id": place_id}))
    if place.retired_at is not None:
        raise PlaceError(Message("error.place.retired", {"kind": kind, "id": place_id}))


def retire_organisation(session: Session, organisation_id: str) -> OrganisationRow:
    organisation = session.get(Organisation, organisation_id)
    if organisation is None:
        raise PlaceError(Message("error.org.unknown", {"id": organisation_id}))
    if organisation.retired_at is not None:
        raise PlaceConflict(Message("error.org.retired", {"id": organisation_id}))
    organisation.retired_at = utcnow()
    session.flush()
    return _row(session, organisation)


def list_organisations(session: Session, *, retired: bool = False) -> list[OrganisationRow]:
    query = select(Organisation).order_by(Organisation.id)
    if not retired:
        query = query.where(Organisation.retired_at.is_(None))
    return [_row(session, organisation) for organisation in session.scalars(query)]


def _row(session: Session, organisation: Organisation) -> OrganisationRow:
    communities = session.scalars(
        select(OrganisationCommunity.community_id)
        .where(OrganisationCommunity.organisation_id == organisation.id)
        .order_by(OrganisationCommunity.community_id)
    )
    buildings = session.scalars(
        select(OrganisationBuilding.building_id)
        .where(OrganisationBuilding.organisation_id == organisation.id)
        .order_by(OrganisationBuilding.building_id)
    )
    return OrganisationRow(
        organisation.id,
        organisation.type,
        organisation.name_zh,
        organisation.name_en,
        tuple(communities),
        tuple(buildings),
        organisation.retired_at is not None,
    )
