"""The district's places as data: streets (街道), communities, grids and buildings, added,
moved and retired by an operator, never by editing code.

The hierarchy is street → community → grid → building (rooms are made by the import).
A building's community is its grid's, so moving a grid moves its buildings with it.
Nothing is deleted: a retired place keeps its id (old audit entries name it) and is
refused for anything new; a place is not retired while people live in it or while it
holds places still in use. Each change is one call in the caller's transaction, which
records its audit entry in the same transaction (`api.cli.places`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, cast

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vault.errors import VaultError
from vault.i18n import Message
from vault.models import Building, Community, Grid, Household, Resident, Room, Street, utcnow

KINDS: Final = ("street", "community", "grid", "building")
# What each kind hangs under; a street hangs under nothing (its district is a name).
PARENT_KIND: Final[Mapping[str, str | None]] = {
    "street": None,
    "community": "street",
    "grid": "community",
    "building": "grid",
}
MODELS: Final[Mapping[str, type[Street | Community | Grid | Building]]] = {
    "street": Street,
    "community": Community,
    "grid": Grid,
    "building": Building,
}
PLACE_ID = re.compile(r"^[a-z][a-z0-9_]{1,31}$")  # like the demo's st_/cm_/gd_/bd_ ids
NAME_LENGTH: Final = 100


class PlaceError(VaultError):
    """A change to the district's places that cannot be made as asked; nothing was written."""

    slug: ClassVar[str] = "validation-error"

    def __init__(self, message: Message) -> None:
        super().__init__(message.text("en"))
        self.message = message


class PlaceConflict(PlaceError):
    slug = "conflict"  # e.g. retiring a place people still live in


@dataclass(frozen=True)
class PlaceRow:
    kind: str
    id: str
    name: str
    parent: str | None
    residents: int
    retired: bool

    def record(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "id": self.id,
            "name": self.name,
            "parent": self.parent,
            "residents": self.residents,
            "retired": self.retired,
        }


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise PlaceError(Message("error.place.kind", {"kind": kind, "kinds": ", ".join(KINDS)}))
    return kind


AnyPlace = Street | Community | Grid | Building


def _place(session: Session, kind: str, place_id: str) -> AnyPlace:
    found = session.get(MODELS[_kind(kind)], place_id)
    if found is None:
        raise PlaceError(Message("error.place.unknown", {"kind": kind, "id": place_id}))
    return cast(AnyPlace, found)  # MODELS maps each kind to one of these


def _parent_of(kind: str, parent: str | None, session: Session) -> Any:
    wanted = PARENT_KIND[kind]
    if wanted is None:
        if parent is not None:
            raise PlaceError(Message("error.place.no-parent", {"kind": kind}))
        return None
    if parent is None:
        raise PlaceError(Message("error.place.parent-needed", {"kind": kind, "parent": wanted}))
    found = _place(session, wanted, parent)
    if found.retired_at is not None:
        raise PlaceError(Message("error.place.retired", {"kind": wanted, "id": parent}))
    return found


def add_place(
    session: Session, kind: str, place_id: str, name: str, parent: str | None = None
) -> PlaceRow:
    """Add a place under its parent (a street under none); its id must be new to every
    kind, so an id names one place in every list and audit entry."""
    parent_place = _parent_of(_kind(kind), parent, session)
    if not PLACE_ID.match(place_id):
        raise PlaceError(Message("error.place.id", {"id": place_id}))
    name = name.strip()
    if not name or len(name) > NAME_LENGTH:
        raise PlaceError(Message("error.place.name", {"most": NAME_LENGTH}))
    if any(session.get(model, place_id) is not None for model in MODELS.values()):
        raise PlaceConflict(Message("error.place.taken", {"id": place_id}))
    if kind == "street":
        session.add(Street(id=place_id, name=name, district=""))
    elif kind == "community":
        session.add(Community(id=place_id, name=name, street_id=parent_place.id))
    elif kind == "grid":
        session.add(Grid(id=place_id, name=name, community_id=parent_place.id))
    else:
        session.add(
            Building(
                id=place_id,
                name=name,
                grid_id=parent_place.id,
                community_id=parent_place.community_id,
            )
        )
    session.flush()
    return PlaceRow(kind, place_id, name, parent, 0, False)


def move_place(session: Session, kind: str, place_id: str, parent: str) -> PlaceRow:
    """Hang a community, grid or building under another parent of the right kind."""
    place = _place(session, kind, place_id)
    if kind == "street":
        raise PlaceError(Message("error.place.no-parent", {"kind": kind}))
    target = _parent_of(kind, parent, session)
    if isinstance(place, Community):
        place.street_id = target.id
    elif isinstance(place, Grid):
        place.community_id = target.id
        for building in session.scalars(select(Building).where(Building.grid_id == place.id)):
            building.community_id = target.id  # a building's community is its grid's
    elif isinstance(place, Building):
        place.grid_id = target.id
        place.community_id = target.community_id
    session.flush()
    return _row(session, kind, place)


def rename_place(session: Session, kind: str, place_id: str, name: str) -> PlaceRow:
    """Give a place another name (its id, which the audit entries name, stays)."""
    place = _place(session, kind, place_id)
    name = name.strip()
    if not name or len(name) > NAME_LENGTH:
        raise PlaceError(Message("error.place.name", {"most": NAME_LENGTH}))
    place.name = name
    session.flush()
    return _row(session, kind, place)


def retire_place(session: Session, kind: str, place_id: str) -> PlaceRow:
    """Retire a place: refused while residents live in it or places under it are in use."""
    place = _place(session, kind, place_id)
    if place.retired_at is not None:
        raise PlaceConflict(Message("error.place.retired", {"kind": kind, "id": place_id}))
    living = _residents(session, kind, place_id)
    if living:
        raise PlaceConflict(
            Message("error.place.inhabited", {"kind": kind, "id": place_id, "residents": living})
        )
    child_kind = next((k for k, p in PARENT_KIND.items() if p == kind), None)
    if child_kind is not None:
        child = MODELS[child_kind]
        column = getattr(child, f"{kind}_id")
        in_use = session.scalar(
            select(func.count())
            .select_from(child)
            .where(column == place_id, child.retired_at.is_(None))
        )
        if in_use:
            raise PlaceConflict(
                Message("error.place.in-use", {"kind": kind, "id": place_id, "places": in_use})
            )
    place.retired_at = utcnow()
    session.flush()
    return _row(session, kind, place)


def list_places(session: Session, *, retired: bool = False) -> list[PlaceRow]:
    """Every place, streets first, each with its parent and how many residents live there."""
    rows: list[PlaceRow] = []
    for kind in KINDS:
        model = MODELS[kind]
        query = select(model).order_by(model.id)
        if not retired:
            query = query.where(model.retired_at.is_(None))
        found: list[AnyPlace] = list(session.scalars(query))
        living = _residents_by(session, kind)  # one grouped count per kind, not per place
        rows += [_row(session, kind, place, living.get(place.id, 0)) for place in found]
    return rows


def _row(session: Session, kind: str, place: AnyPlace, residents: int | None = None) -> PlaceRow:
    parent = {
        "street": None,
        "community": getattr(place, "street_id", None),
        "grid": getattr(place, "community_id", None),
        "building": getattr(place, "grid_id", None),
    }[kind]
    if residents is None:
        residents = _residents(session, kind, place.id)
    return PlaceRow(kind, place.id, place.name, parent, residents, place.retired_at is not None)


def _place_column(kind: str) -> Any:
    """The column naming the place of `kind` a resident lives in (their building's)."""
    return {
        "building": Building.id,
        "grid": Building.grid_id,
        "community": Building.community_id,
        "street": Community.street_id,
    }[kind]


def _residents_by(session: Session, kind: str, place_id: str | None = None) -> dict[str, int]:
    """Active residents (decoys are not people) per place of `kind`, or of one place."""
    column = _place_column(kind)
    query = (
        select(column, func.count(Resident.id))
        .join(Household, Household.id == Resident.household_id)
        .join(Room, Room.id == Household.room_id)
        .join(Building, Building.id == Room.building_id)
        .join(Community, Community.id == Building.community_id)
        .where(Resident.status == "active", Resident.is_decoy.is_(False))
        .group_by(column)
    )
    if place_id is not None:
        query = query.where(column == place_id)
    return {str(place): int(count) for place, count in session.execute(query)}


def _residents(session: Session, kind: str, place_id: str) -> int:
    return _residents_by(session, kind, place_id).get(place_id, 0)
