"""Decoy residents for export tracing (ARCHITECTURE.md, "Decoys").

A decoy is a fictional person from `vault.synthetic`, registered in the vault like anyone
else (sealed fields, a household in a real room of a real building) but flagged
`is_decoy`. The gate leaves decoys out of every read, list, search, count and resident's
view; only fingerprinted exports include them, a few per export, chosen by the export's
secret. Each decoy row's audit entry has kind `decoy`, so reports of real accesses (which
count kind `access`) never include them.

The pool grows on demand: an export whose scope holds fewer decoys than it needs creates
them in the buildings it covers, and records that as an operational event.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.models import Building, Community, Household, Room, Street, new_id
from vault.services import NewResident, Provenance, ResidentStore
from vault.synthetic import make_person

__all__ = ["create_decoys", "pool_target"]

DECOY_ACTOR = "system:decoys"


def pool_target(per_export: int) -> int:
    """How many decoys a scope should hold so that exports' choices differ widely: each
    decoy is then in about a tenth of the scope's exports, so two decoys found in a file
    whose formatting was lost still single out about one export in a hundred."""
    return max(10 * per_export, 24)


def create_decoys(
    session: Session, store: ResidentStore, building_ids: Sequence[str], count: int
) -> list[str]:
    """Create `count` decoys spread over the given buildings; returns their vault ids.

    Names, ID numbers and phones come from the synthetic generator (belonging to no one);
    the address is composed from the hierarchy like the real ones, so the decoy's row
    looks like its neighbours'. The generator is seeded from the OS, so no one can
    re-derive which people are decoys from the code."""
    if count <= 0 or not building_ids:
        return []
    # Fictional people from the synthetic generator, seeded from the OS for each batch.
    rng = random.Random(secrets.randbits(64))  # noqa: S311 - picks fictional values, no keys
    today = datetime.now(UTC).date()
    rooms = list(
        session.execute(
            select(Room, Building.name, Community.name, Street.name, Street.district)
            .join(Building, Building.id == Room.building_id)
            .join(Community, Community.id == Building.community_id)
            .join(Street, Street.id == Community.street_id)
            .where(Room.building_id.in_(list(building_ids)))
            .order_by(Room.id)
        )
    )
    if not rooms:
        return []
    # The address is the field that generalises by building (the catalogue names it).
    address_field = next((s.name for s in store.catalogue if "building" in s.generalisations), None)
    pending = []
    for _ in range(count):
        room, building, community, street, district = rooms[rng.randrange(len(rooms))]
        household = Household(id=new_id("hh"), room_id=room.id)
        session.add(household)
        person = make_person(rng, today=today)
        if address_field and address_field in person:
            person[address_field] = (
                f"{district}{street}{community}{building}{room.unit}单元{room.number}室"
            )
        pending.append(NewResident(person, household.id, is_decoy=True))
    session.flush()
    return store.create_many(session, pending, Provenance(actor=DECOY_ACTOR, channel="system"))
