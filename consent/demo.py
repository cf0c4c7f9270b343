"""Demo consents (API.md "Demo data"): at least one consent to a property company.

A demo resident who lives in a building a property company serves gives that company a
separate consent for its consent-based purpose, through the ordinary service (so it has
its audit event and its signed receipt like any other).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent.services import ConsentService, Grant
from vault.models import (
    Building,
    Household,
    Organisation,
    OrganisationBuilding,
    Resident,
    Room,
)

DEMO_ACTOR = "demo"


def create_demo_consents(
    session: Session, service: ConsentService, prefer: Sequence[str] = ()
) -> list[str]:
    """One consent to a property company, by a preferred demo resident where one lives in
    a building a company serves; returns the consent ids."""
    purpose = next(
        (
            code
            for code, spec in sorted(service.purposes.items())
            if spec.get("legal_basis") == "consent"
            and "property_company" in (spec.get("recipient_types") or [])
        ),
        None,
    )
    if purpose is None:
        return []
    rows = session.execute(
        select(Resident.id, OrganisationBuilding.organisation_id)
        .join(Household, Household.id == Resident.household_id)
        .join(Room, Room.id == Household.room_id)
        .join(Building, Building.id == Room.building_id)
        .join(OrganisationBuilding, OrganisationBuilding.building_id == Building.id)
        .join(Organisation, Organisation.id == OrganisationBuilding.organisation_id)
        .where(
            Organisation.type == "property_company",
            Resident.status == "active",
            Resident.is_decoy.is_(False),
        )
        .order_by(Resident.id, OrganisationBuilding.organisation_id)
    ).all()
    if not rows:
        return []
    chosen = next((row for row in rows if row[0] in set(prefer)), rows[0])
    consent = service.grant(
        session,
        Grant(
            resident_id=chosen[0],
            recipient=chosen[1],
            purpose=purpose,
            channel="self",
            recorded_by=DEMO_ACTOR,
            separate=True,
            subject_type="resident",
        ),
    )
    return [consent.id]
