"""Small builders for test data. Everything is fictional (see vault.synthetic)."""

from __future__ import annotations

import random
from typing import Any

from sqlalchemy.orm import Session

from vault.models import Building, Community, Grid, Household, Room, Street
from vault.synthetic import make_person


def place(session: Session, suffix: str = "1") -> Building:
    """A street, community, grid and one building to put households in."""
    # Parents are flushed first: the models carry foreign keys, not ORM relationships.
    session.add(Street(id=f"st_{suffix}", name="测试街道", district="测试区"))
    session.flush()
    session.add(
        Community(
            id=f"cm_{suffix}", street_id=f"st_{suffix}", name="测试社区", office_phone="13900000009"
        )
    )
    session.flush()
    session.add(Grid(id=f"gd_{suffix}", community_id=f"cm_{suffix}", name="第1网格"))
    session.flush()
    building = Building(
        id=f"bd_{suffix}", community_id=f"cm_{suffix}", grid_id=f"gd_{suffix}", name="1号楼"
    )
    session.add(building)
    session.flush()
    return building


def household(session: Session, building: Building, number: str) -> Household:
    room = Room(id=f"rm_{building.id}_{number}", building_id=building.id, unit="1", number=number)
    session.add(room)
    session.flush()
    hh = Household(id=f"hh_{building.id}_{number}", room_id=room.id)
    session.add(hh)
    session.flush()
    return hh


def person(seed: int, **overrides: Any) -> dict[str, Any]:
    values = make_person(random.Random(seed))
    values.update(overrides)
    return values
