"""Data-quality checks see real residents only: decoys of traceable exports are nobody's data."""

from __future__ import annotations

from sqlalchemy import select

from access.exports.decoys import create_decoys
from vault.context import Vault
from vault.demo import COMMITTEE_OFFICE_PHONES, populate
from vault.models import Building, Resident
from vault.quality import run_checks
from vault.services import Provenance


def test_decoys_never_appear_in_the_quality_report(vault: Vault) -> None:
    store = vault.store
    phone = next(s.name for s in store.catalogue if s.validator == "cn_mobile")
    id_field = next(s.name for s in store.catalogue if s.validator == "gb11643")
    with vault.sessions() as session, session.begin():
        populate(session, store, 40)
        real = session.scalars(select(Resident.id).order_by(Resident.id).limit(1)).one()
        # The ID number with the birth date and gender it encodes, so the copy validates.
        identity = store.read(
            session, real, [id_field, *store.catalogue[id_field].matches.values()]
        )
        buildings = list(session.scalars(select(Building.id)))
        decoys = create_decoys(session, store, buildings, 4)
        # Decoys that look exactly like what the checks hunt for: the committee's office
        # number shared across households, and an ID number a real resident holds.
        for decoy in decoys[:3]:
            store.update(
                session,
                decoy,
                {phone: COMMITTEE_OFFICE_PHONES["cm_xingfu"]},
                Provenance(actor="test", channel="system"),
            )
        store.update(session, decoys[3], identity, Provenance(actor="test", channel="system"))
    with vault.sessions() as session:
        issues = run_checks(session, store)
    flagged = {issue.resident_id for issue in issues}
    assert {"shared-phone", "office-phone"} <= {issue.code for issue in issues}
    assert flagged.isdisjoint(decoys)
    # The real holder of the ID number is not reported as a duplicate because of a decoy.
    assert real not in {i.resident_id for i in issues if i.code == "duplicate-id-number"}
    # Each finding says what it found in both languages, as it always has.
    shared = next(i for i in issues if i.code == "shared-phone")
    assert shared.message("zh") == "该手机号被至少 3 户无关住户共用，可能是占位号码"
    assert shared.message("en") == (
        "this phone number is shared by at least 3 unrelated households; likely a placeholder"
    )
    office = next(i for i in issues if i.code == "office-phone")
    assert office.message("en") == "the phone number is an office's number"
