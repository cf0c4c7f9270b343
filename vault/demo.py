"""A fictional street for demos and tests: communities, grids, buildings, organisations, people.

Everything here is generated: the names, ID numbers and phones belong to no one. A few
residents get the residents' committee's office number as their phone, the placeholder
the papers describe, so `resident-vault quality` has something real to find.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Final

from sqlalchemy import insert
from sqlalchemy.orm import Session

from vault.mandates import grant_mandate
from vault.models import (
    Building,
    Community,
    Grid,
    Guardianship,
    Household,
    Organisation,
    OrganisationBuilding,
    OrganisationCommunity,
    Room,
    Street,
)
from vault.purposes import RegisteredPurpose
from vault.services import NewResident, Provenance, ResidentStore
from vault.synthetic import make_household

DISTRICT = "示范区"
STREET = ("st_demo", "示范街道")
COMMUNITIES = (("cm_xingfu", "幸福社区", "xf"), ("cm_hexie", "和谐社区", "hx"))
GRIDS_PER_COMMUNITY = 2
BUILDINGS_PER_GRID = 3
UNITS, FLOORS, ROOMS_PER_FLOOR = 2, 6, 2
# The committee's office number, a mobile as many committees use, planted as a placeholder.
COMMITTEE_OFFICE_PHONES = {"cm_xingfu": "13900000001", "cm_hexie": "13900000002"}
PLACEHOLDER_PHONE_RESIDENTS = 3


@dataclass(frozen=True)
class DemoSummary:
    communities: int
    grids: int
    buildings: int
    organisations: int
    households: int
    residents: int


def create_hierarchy(session: Session) -> list[tuple[Building, str]]:
    street_id, street_name = STREET
    # Parents are flushed before children: the models carry foreign keys, not relationships.
    session.add(Street(id=street_id, name=street_name, district=DISTRICT))
    session.flush()
    buildings: list[tuple[Building, str]] = []
    for community_id, community_name, short in COMMUNITIES:
        session.add(
            Community(
                id=community_id,
                street_id=street_id,
                name=community_name,
                office_phone=COMMITTEE_OFFICE_PHONES[community_id],
            )
        )
        session.flush()
        for g in range(1, GRIDS_PER_COMMUNITY + 1):
            grid = Grid(id=f"gd_{short}_{g}", community_id=community_id, name=f"第{g}网格")
            session.add(grid)
            session.flush()
            for b in range(1, BUILDINGS_PER_GRID + 1):
                number = (g - 1) * BUILDINGS_PER_GRID + b
                building = Building(
                    id=f"bd_{short}_{number:02d}",
                    community_id=community_id,
                    grid_id=grid.id,
                    name=f"{number}号楼",
                )
                session.add(building)
                buildings.append((building, f"{DISTRICT}{street_name}{community_name}"))
    session.flush()
    return buildings


def _organisations(session: Session, buildings: list[tuple[Building, str]]) -> int:
    everywhere = [c[0] for c in COMMUNITIES]
    xingfu = [b.id for b, _ in buildings if b.community_id == "cm_xingfu"]
    hexie = [b.id for b, _ in buildings if b.community_id == "cm_hexie"]
    organisations = [
        (
            "org_civil_affairs",
            "department",
            "示范区民政局",
            "District Civil Affairs Bureau",
            "0571-80000001",
            everywhere,
            [],
        ),
        (
            "org_health",
            "department",
            "示范区卫生健康局",
            "District Health Commission",
            "0571-80000002",
            everywhere,
            [],
        ),
        (
            "org_public_security",
            "department",
            "示范区公安分局",
            "District Public Security Bureau",
            "0571-80000003",
            everywhere,
            [],
        ),
        (
            "org_rc_xingfu",
            "residents_committee",
            "幸福社区居民委员会",
            "Xingfu Community Residents' Committee",
            COMMITTEE_OFFICE_PHONES["cm_xingfu"],
            ["cm_xingfu"],
            [],
        ),
        (
            "org_rc_hexie",
            "residents_committee",
            "和谐社区居民委员会",
            "Hexie Community Residents' Committee",
            COMMITTEE_OFFICE_PHONES["cm_hexie"],
            ["cm_hexie"],
            [],
        ),
        (
            "org_anju_property",
            "property_company",
            "安居物业服务有限公司",
            "Anju Property Services Ltd.",
            "0571-80000011",
            [],
            xingfu,
        ),
        (
            "org_yijia_property",
            "property_company",
            "宜家物业管理有限公司",
            "Yijia Property Management Ltd.",
            "0571-80000012",
            [],
            hexie,
        ),
        (
            "org_oc_xingfu",
            "owners_committee",
            "幸福家园业主委员会",
            "Xingfu Homes Owners' Committee",
            None,
            [],
            xingfu,
        ),
    ]
    for org_id, kind, zh, en, phone, communities, served in organisations:
        session.add(Organisation(id=org_id, type=kind, name_zh=zh, name_en=en, office_phone=phone))
        session.flush()
        session.add_all(
            OrganisationCommunity(organisation_id=org_id, community_id=c) for c in communities
        )
        session.add_all(OrganisationBuilding(organisation_id=org_id, building_id=b) for b in served)
    session.flush()
    _mandates(session)
    return len(organisations)


# The demo departments' mandates: each purpose for every action it permits, every field.
DEMO_MANDATES: Final = {
    "org_civil_affairs": ("subsidy-review", "elderly-care-visit", "community-statistics"),
    "org_health": ("public-health-followup", "community-statistics"),
    "org_public_security": ("household-registration-check",),
}


def _mandates(session: Session) -> None:
    for org_id, purposes in DEMO_MANDATES.items():
        for code in purposes:
            registered = session.get(RegisteredPurpose, code)
            if registered is None:  # a registry without the shipped purpose
                continue
            grant_mandate(
                session,
                org_id,
                code,
                registered.definition["actions"],
                field_categories={},
                actor="demo",
            )


def _rooms(buildings: list[tuple[Building, str]]) -> list[tuple[Room, str]]:
    """Every room, ordered so consecutive households land in different buildings: even a
    small demo then has residents in every building, grid and community."""
    rooms: list[tuple[Room, str]] = []
    for unit in range(1, UNITS + 1):
        for floor in range(1, FLOORS + 1):
            for door in range(1, ROOMS_PER_FLOOR + 1):
                for building, prefix in buildings:
                    number = f"{floor}{door:02d}"
                    room = Room(
                        id=f"rm_{building.id[3:]}_{unit}_{number}",
                        building_id=building.id,
                        unit=str(unit),
                        number=number,
                    )
                    address = f"{prefix}{building.name}{unit}单元{number}室"
                    rooms.append((room, address))
    return rooms


GUARDIAN_RELATIONS = ("head", "spouse")
WARD_AGE = 14  # PIPL Art. 31: under 14, a guardian consents and sees on the child's behalf


def _insert(
    session: Session, store: ResidentStore, pending: list[NewResident], provenance: Provenance
) -> int:
    """Insert a batch, then record the parents of each household's under-14s as guardians."""
    ids = store.create_many(session, pending, provenance)
    relation = next(s.name for s in store.catalogue if s.validator is None and "head" in s.values)
    birth = next(s.name for s in store.catalogue if s.validator == "past_date")
    today = datetime.now(UTC).date()
    by_household: dict[str | None, list[tuple[str, Mapping[str, object]]]] = {}
    for resident_id, new in zip(ids, pending, strict=True):
        by_household.setdefault(new.household_id, []).append((resident_id, new.values))
    rows = []
    for members in by_household.values():
        guardians = [rid for rid, v in members if v.get(relation) in GUARDIAN_RELATIONS]
        for rid, values in members:
            born = date.fromisoformat(str(values.get(birth)))
            age = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
            if values.get(relation) == "child" and age < WARD_AGE:
                rows += [
                    {
                        "guardian_id": g,
                        "ward_id": rid,
                        "basis": "parent",
                        "since": provenance.at,
                        "until": None,
                    }
                    for g in guardians
                ]
    if rows:
        session.execute(insert(Guardianship), rows)
    return len(ids)


def populate(
    session: Session,
    store: ResidentStore,
    residents: int,
    *,
    seed: int = 20261125,
    batch_size: int = 1000,
    progress: Callable[[int], None] | None = None,
    commit: Callable[[], None] | None = None,
) -> DemoSummary:
    """Create the demo street and about `residents` people in households.

    `commit` is called between batches so a large demo does not hold one huge transaction.
    """
    rng = random.Random(seed)
    buildings = create_hierarchy(session)
    organisations = _organisations(session, buildings)
    rooms = _rooms(buildings)
    provenance = Provenance(actor="demo", channel="demo")
    phone = next(s.name for s in store.catalogue.searchable if s.validator == "cn_mobile")
    id_field = next(s.name for s in store.catalogue.searchable if s.validator == "gb11643")
    seen_ids: set[object] = set()
    created = households = placeholders = 0
    pending: list[NewResident] = []
    room_index = 0
    while created + len(pending) < residents:
        room, address = rooms[room_index % len(rooms)]
        if room_index < len(rooms):
            session.add(room)
            session.flush()
        room_index += 1
        household = Household(id=f"hh_{households:07d}", room_id=room.id)
        session.add(household)
        households += 1
        left = residents - created - len(pending)
        # The generator repeats an ID number about once in 15,000 people: drop repeats.
        members = []
        for member in make_household(rng, address=address, size_hint=min(left, 6))[:left]:
            if member.get(id_field) not in seen_ids:
                seen_ids.add(member.get(id_field))
                members.append(member)
        with_phone = [m for m in members if phone in m]
        if placeholders < PLACEHOLDER_PHONE_RESIDENTS and with_phone:
            # One per household: unrelated households sharing a number is the tell.
            with_phone[0][phone] = COMMITTEE_OFFICE_PHONES["cm_xingfu"]
            placeholders += 1
        pending.extend(NewResident(person, household.id) for person in members)
        if len(pending) >= batch_size:
            session.flush()
            created += _insert(session, store, pending, provenance)
            if progress:
                progress(len(pending))
            pending = []
            if commit:
                commit()
    if pending:
        session.flush()
        created += _insert(session, store, pending, provenance)
        if progress:
            progress(len(pending))
    return DemoSummary(
        communities=len(COMMUNITIES),
        grids=len(COMMUNITIES) * GRIDS_PER_COMMUNITY,
        buildings=len(buildings),
        organisations=organisations,
        households=households,
        residents=created,
    )
