"""The demo cast as policy subjects: what the gate would build for each of them.

Built from the demo street in `vault.demo` (two communities, two grids each, three
buildings per grid) and the organisations `init --demo` creates, so the decision table,
the tests and the benchmark ask about the same people the demo serves.
"""

from __future__ import annotations

from typing import Any

from policies.bundle import PolicyBundle, load_bundle
from vault.demo import BUILDINGS_PER_GRID, COMMUNITIES, DEMO_MANDATES, GRIDS_PER_COMMUNITY

__all__ = ["demo_bundle", "demo_district", "demo_subjects", "jurisdiction_of"]


def _grids(short: str) -> list[str]:
    return [f"gd_{short}_{g}" for g in range(1, GRIDS_PER_COMMUNITY + 1)]


def _buildings(short: str, grid: int | None = None) -> list[str]:
    grids = range(1, GRIDS_PER_COMMUNITY + 1) if grid is None else [grid]
    return [
        f"bd_{short}_{(g - 1) * BUILDINGS_PER_GRID + b:02d}"
        for g in grids
        for b in range(1, BUILDINGS_PER_GRID + 1)
    ]


def jurisdiction_of(
    communities: list[str] | None = None,
    grids: list[str] | None = None,
    buildings: list[str] | None = None,
) -> dict[str, list[str]]:
    return {"communities": communities or [], "grids": grids or [], "buildings": buildings or []}


def demo_subjects() -> dict[str, dict[str, Any]]:
    """Subject documents by a short label: departments, committees, property companies,
    the owners' committee, a grid worker in each community, a community worker, a
    resident (a guardian) and an auditor."""
    shorts = {community: short for community, _, short in COMMUNITIES}
    everywhere = [community for community, _, _ in COMMUNITIES]
    xf, hx = shorts["cm_xingfu"], shorts["cm_hexie"]

    def organisation(kind: str, org: str, jurisdiction: dict[str, list[str]]) -> dict[str, Any]:
        return {"type": kind, "organisation": org, "roles": [], "jurisdiction": jurisdiction}

    def worker(kind: str, org: str, jurisdiction: dict[str, list[str]]) -> dict[str, Any]:
        return {"type": kind, "organisation": org, "roles": [kind], "jurisdiction": jurisdiction}

    return {
        "civil_affairs": organisation(
            "department", "org_civil_affairs", jurisdiction_of(everywhere)
        ),
        "health": organisation("department", "org_health", jurisdiction_of(everywhere)),
        "public_security": organisation(
            "department", "org_public_security", jurisdiction_of(everywhere)
        ),
        "rc_xingfu": organisation(
            "residents_committee", "org_rc_xingfu", jurisdiction_of(["cm_xingfu"])
        ),
        "rc_hexie": organisation(
            "residents_committee", "org_rc_hexie", jurisdiction_of(["cm_hexie"])
        ),
        "anju_property": organisation(
            "property_company", "org_anju_property", jurisdiction_of(buildings=_buildings(xf))
        ),
        "yijia_property": organisation(
            "property_company", "org_yijia_property", jurisdiction_of(buildings=_buildings(hx))
        ),
        "oc_xingfu": organisation(
            "owners_committee", "org_oc_xingfu", jurisdiction_of(buildings=_buildings(xf))
        ),
        "grid_worker_xf_1": worker(
            "grid_worker",
            "org_rc_xingfu",
            jurisdiction_of(["cm_xingfu"], _grids(xf)[:1], _buildings(xf, 1)),
        ),
        "grid_worker_hx_2": worker(
            "grid_worker",
            "org_rc_hexie",
            jurisdiction_of(["cm_hexie"], _grids(hx)[1:2], _buildings(hx, 2)),
        ),
        "community_worker_xf": worker(
            "community_worker", "org_rc_xingfu", jurisdiction_of(["cm_xingfu"])
        ),
        "resident_guardian": {"type": "resident", "roles": [], "jurisdiction": jurisdiction_of()},
        "auditor": {"type": "auditor", "roles": ["auditor"], "jurisdiction": jurisdiction_of()},
    }


def demo_district() -> dict[str, Any]:
    """The district data the demo vault's database gives the policy (`policies.district`):
    the shipped purposes, and the demo departments' mandates for each purpose as a whole.
    For tests and benchmarks that ask an engine with no database behind it."""
    purposes = load_bundle().data["purposes"]
    return {
        "revision": "demo",
        "purposes": purposes,
        "mandates": {
            org: {"type": "department", "purposes": list(codes), "grants": {}}
            for org, codes in DEMO_MANDATES.items()
        },
    }


def demo_bundle() -> PolicyBundle:
    """The shipped policy with the demo district's data."""
    return load_bundle().with_district(demo_district())
