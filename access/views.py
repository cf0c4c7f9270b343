"""What an access narrows to and what it shows: the place a list or an export is narrowed
to within the caller's scope, one resident's record as the caller sees it, and the helpers
that shape it. Plain values shared by the gate and the fingerprinted exports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import ColumnElement

from consent import ConsentCover
from policies import rows as row_sql


@dataclass(frozen=True)
class Place:
    """Optional narrowing of a list to one community, grid or building (within scope)."""

    community: str | None = None
    grid: str | None = None
    building: str | None = None

    def filter(self) -> ColumnElement[bool]:
        return row_sql.place_filter(
            community=self.community, grid=self.grid, building=self.building
        )


EVERYWHERE: Final = Place()  # no narrowing: the whole of the caller's scope


@dataclass(frozen=True)
class RecordView:
    resident_id: str
    fields: dict[str, Any]
    treatments: dict[str, str]


def place_context(building: str | None, community: str | None) -> dict[str, str | None]:
    """What the building and community generalisations show, by name."""
    return {"building": building, "community": community}


def narrowed_to(treatments: Mapping[str, str], cover: ConsentCover) -> dict[str, str]:
    """A resident's treatments: fields their consents do not cover are denied."""
    return {n: (t if n in cover.fields else "denied") for n, t in treatments.items()}
