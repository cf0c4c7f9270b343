"""Resident records end to end on a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select, update

from tests.conftest import make_vault
from tests.factories import household, person, place
from vault.context import Vault
from vault.crypto import Suite
from vault.errors import DecryptionFailed, ResidentErased, ResidentNotFound, ValidationFailed
from vault.models import (
    BlindIndexEntry,
    Building,
    DataKeyRecord,
    Erasure,
    Resident,
    ResidentRecord,
)
from vault.services import Provenance

WORKER = Provenance(actor="worker:w-007", channel="desk")


def _create(vault: Vault, seed: int, **overrides: object) -> tuple[str, dict[str, object]]:
    values = person(seed, **overrides)
    with vault.sessions() as session, session.begin():
        building = session.get(Building, "bd_1") or place(session)
        hh = household(session, building, f"{seed:03d}")
        resident_id = vault.store.create(session, values, WORKER, household_id=hh.id)
    return resident_id, values


@pytest.mark.parametrize("suite", list(Suite))
def test_every_field_round_trips_under_both_suites(
    tmp_path: Path, database_url: str, suite: Suite
) -> None:
    vault = make_vault(tmp_path / "home", database_url, suite)
    try:
        resident_id, values = _create(vault, 11)  # seed 11 has every field, a plate too
        vault.store.data_keys.cache.clear()  # read through the keyring, not the cache
        with vault.sessions() as session:
            stored = vault.store.read(session, resident_id)
            expected = vault.store.validate(values)
            assert set(expected) == set(vault.store.catalogue.names)
            assert stored == expected
            suites = set(session.scalars(select(DataKeyRecord.suite)))
        assert suites == {suite.value}
    finally:
        vault.close()


def test_ciphertext_copied_to_another_resident_or_field_does_not_open(vault: Vault) -> None:
    """Alice's document of phone's class (L3) copied to Bob's row, and into the column of
    her own name's class (L2): neither opens."""
    alice, _ = _create(vault, 2)
    bob, _ = _create(vault, 3)
    with vault.sessions() as session, session.begin():
        stolen = session.get_one(ResidentRecord, alice).doc_l3
        assert stolen is not None
        session.execute(
            update(ResidentRecord).where(ResidentRecord.resident_id == bob).values(doc_l3=stolen)
        )
        session.execute(
            update(ResidentRecord).where(ResidentRecord.resident_id == alice).values(doc_l2=stolen)
        )
    vault.store.data_keys.cache.clear()
    with vault.sessions() as session:
        with pytest.raises(DecryptionFailed):
            vault.store.read(session, bob, ["phone"])
        with pytest.raises(DecryptionFailed):
            vault.store.read(session, alice, ["name"])
        assert "phone" in vault.store.read(session, alice, ["phone"])


def test_tampered_ciphertext_does_not_open(vault: Vault) -> None:
    resident_id, _ = _create(vault, 4)
    with vault.sessions() as session, session.begin():
        row = session.get_one(ResidentRecord, resident_id)  # id_number is in class L4
        assert row.doc_l4 is not None
        tampered = bytearray(row.doc_l4)
        tampered[-1] ^= 0x01
        row.doc_l4 = bytes(tampered)
    with vault.sessions() as session, pytest.raises(DecryptionFailed):
        vault.store.read(session, resident_id, ["id_number"])


def test_no_plaintext_reaches_the_database(vault: Vault) -> None:
    _, values = _create(vault, 5)
    with vault.sessions() as session:
        blobs = b"".join(
            (r.doc_l1 or b"")
            + (r.doc_l2 or b"")
            + (r.doc_l3 or b"")
            + (r.doc_l4 or b"")
            + r.provenance.encode()
            for r in session.scalars(select(ResidentRecord))
        )
        digests = b"".join(session.scalars(select(BlindIndexEntry.digest)))
    for name in ("name", "id_number", "phone"):
        assert str(values[name]).encode() not in blobs + digests


def test_failed_update_leaves_the_previous_version_intact(vault: Vault) -> None:
    resident_id, _ = _create(vault, 6)
    with vault.sessions() as session:
        before = vault.store.read(session, resident_id)
    new_phone = person(99)["phone"]
    with vault.sessions() as session, session.begin(), pytest.raises(ValidationFailed) as failed:
        # A good phone and a bad birth date (it no longer matches the stored ID number):
        vault.store.update(
            session, resident_id, {"phone": new_phone, "birth_date": "1901-01-01"}, WORKER
        )
    assert {p.field for p in failed.value.problems} == {"birth_date"}
    with vault.sessions() as session:
        assert vault.store.read(session, resident_id) == before
        expected = [resident_id] if new_phone == before["phone"] else []
        assert vault.store.find(session, "phone", new_phone) == expected


def test_update_keeps_provenance_per_field(vault: Vault) -> None:
    resident_id, _ = _create(vault, 7)
    resident_self = Provenance(actor=f"resident:{resident_id}", channel="self")
    with vault.sessions() as session, session.begin():
        vault.store.update(session, resident_id, {"phone": "13700001111"}, resident_self)
    with vault.sessions() as session:
        provenance = vault.store.provenance(session, resident_id)
        assert vault.store.read(session, resident_id, ["phone"]) == {"phone": "13700001111"}
    assert (provenance["phone"].written_by, provenance["phone"].channel) == (
        f"resident:{resident_id}",
        "self",
    )
    assert (provenance["name"].written_by, provenance["name"].channel) == ("worker:w-007", "desk")
    assert provenance["phone"].written_at.tzinfo is not None


def test_clearing_a_field_removes_value_and_index(vault: Vault) -> None:
    resident_id, values = _create(vault, 8)
    with vault.sessions() as session, session.begin():
        vault.store.update(session, resident_id, {"phone": None}, WORKER)
    with vault.sessions() as session:
        assert "phone" not in vault.store.read(session, resident_id)
        assert vault.store.find(session, "phone", str(values["phone"])) == []


def test_lookup_by_identifier_normalises_the_query(vault: Vault) -> None:
    resident_id, values = _create(vault, 9)
    phone = str(values["phone"])
    id_number = str(values["id_number"])
    with vault.sessions() as session:
        assert vault.store.find(session, "phone", f"+86 {phone[:3]}-{phone[3:7]}-{phone[7:]}") == [
            resident_id
        ]
        assert vault.store.find(session, "id_number", id_number.lower()) == [resident_id]
        assert vault.store.find(session, "phone", "13000000000") == []


def test_erasure_destroys_the_key_and_leaves_a_tombstone(vault: Vault) -> None:
    resident_id, values = _create(vault, 10)
    with vault.sessions() as session:
        captured = session.get_one(ResidentRecord, resident_id).doc_l2  # name's class
    with vault.sessions() as session, session.begin():
        vault.store.erase(session, resident_id, "cli:operator", "resident's request (PIPL Art. 47)")
    with vault.sessions() as session:
        with pytest.raises(ResidentErased):
            vault.store.read(session, resident_id)
        assert vault.store.find(session, "phone", str(values["phone"])) == []
        assert (
            session.scalars(
                select(DataKeyRecord).where(DataKeyRecord.resident_id == resident_id)
            ).all()
            == []
        )
        tombstone = session.get_one(Erasure, resident_id)
        assert tombstone.erased_by == "cli:operator"
        assert session.get_one(Resident, resident_id).status == "erased"
        assert captured is not None
        assert captured not in set(session.scalars(select(ResidentRecord.doc_l2)))
        assert session.get(ResidentRecord, resident_id) is None
    with vault.sessions() as session, pytest.raises(ResidentNotFound):
        vault.store.read(session, "r_doesnotexist")


def test_restore_replays_tombstones(vault: Vault) -> None:
    """A restore from before an erasure must not bring the resident back."""
    resident_id, _ = _create(vault, 11)
    with vault.sessions() as session, session.begin():
        vault.store.erase(session, resident_id, "cli:operator", "request")
        tombstone = session.get_one(Erasure, resident_id)
        erased_at = tombstone.erased_at
    # Simulate the restored state: the resident is active again, keys back, tombstone kept.
    other, _ = _create(vault, 12)
    with vault.sessions() as session, session.begin():
        session.get_one(Resident, resident_id).status = "active"
        assert vault.store.replay_erasures(session) == 1
    with vault.sessions() as session:
        assert session.get_one(Resident, resident_id).status == "erased"
        assert session.get_one(Resident, resident_id).erased_at == erased_at
        assert vault.store.read(session, other, ["name"])


def test_stale_write_is_refused(vault: Vault) -> None:
    from vault.errors import StaleRecord

    resident_id, _ = _create(vault, 13)
    with vault.sessions() as session, session.begin():
        version = vault.store.update(session, resident_id, {"phone": "13700002222"}, WORKER)
    with vault.sessions() as session, session.begin(), pytest.raises(StaleRecord):
        vault.store.update(
            session, resident_id, {"phone": "13700003333"}, WORKER, expected_version=version - 1
        )
