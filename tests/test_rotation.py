"""Key rotation: online, complete, and resumable after an interruption."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.factories import household, person, place
from vault.context import Vault
from vault.models import DataKeyRecord, KeyRotation, Resident, ResidentRecord
from vault.rotation import destroy_retired_keks, rotate_data_keys, rotate_kek
from vault.services import NewResident, Provenance


class SimulatedCrashError(Exception):
    """Stands for a crash or Ctrl-C between batches."""


def _populate(vault: Vault, count: int) -> dict[str, dict[str, object]]:
    with vault.sessions() as session, session.begin():
        building = place(session)
        hh = household(session, building, "101")
        values = [person(seed) for seed in range(count)]
        ids = vault.store.create_many(
            session, [NewResident(v, hh.id) for v in values], Provenance("test", "import")
        )
    with vault.sessions() as session:
        return vault.store.read_many(session, ids)


def _interrupt_after(batches: int) -> Callable[[int, int], None]:
    seen = {"n": 0}

    def progress(_done: int, _total: int) -> None:
        seen["n"] += 1
        if seen["n"] >= batches:
            raise SimulatedCrashError

    return progress


def test_kek_rotation_rewraps_every_data_key_and_resumes(vault: Vault) -> None:
    before = _populate(vault, 25)
    old_kek = vault.keyring.active_kek_id()
    with pytest.raises(SimulatedCrashError):
        rotate_kek(vault.sessions, vault.store, batch_size=10, progress=_interrupt_after(1))
    new_kek = vault.keyring.active_kek_id()
    with vault.sessions() as session:
        by_kek = dict(
            session.execute(
                select(DataKeyRecord.kek_id, func.count()).group_by(DataKeyRecord.kek_id)
            ).all()
        )
        assert by_kek == {new_kek: 10, old_kek: 15}  # the first batch committed, no more
        assert session.scalars(select(KeyRotation.finished_at)).one() is None
    report = rotate_kek(vault.sessions, vault.store, batch_size=10)
    assert report.resumed and report.target == new_kek and report.processed == 15
    vault.store.data_keys.cache.clear()
    with vault.sessions() as session:
        assert set(session.scalars(select(DataKeyRecord.kek_id))) == {new_kek}
        assert vault.store.read_many(session, list(before)) == before
    assert destroy_retired_keks(vault.sessions, vault.store) == [old_kek]
    vault.store.data_keys.cache.clear()
    with vault.sessions() as session:
        assert vault.store.read_many(session, list(before)) == before


def test_retired_kek_is_kept_while_a_rotation_is_unfinished(vault: Vault) -> None:
    _populate(vault, 5)
    with pytest.raises(SimulatedCrashError):
        rotate_kek(vault.sessions, vault.store, batch_size=2, progress=_interrupt_after(1))
    from vault.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        destroy_retired_keks(vault.sessions, vault.store)


def _documents(session: Session) -> set[bytes]:
    """Every sealed document of every resident record."""
    return {
        document
        for row in session.scalars(select(ResidentRecord))
        for document in (row.doc_l1, row.doc_l2, row.doc_l3, row.doc_l4)
        if document is not None
    }


def test_data_key_rotation_reseals_fields_and_resumes(vault: Vault) -> None:
    before = _populate(vault, 12)
    with vault.sessions() as session:
        old_ciphertexts = _documents(session)
    with pytest.raises(SimulatedCrashError):
        rotate_data_keys(vault.sessions, vault.store, batch_size=5, progress=_interrupt_after(1))
    with vault.sessions() as session:
        versions = sorted(session.scalars(select(Resident.key_version)))
        assert versions == [1] * 7 + [2] * 5
    report = rotate_data_keys(vault.sessions, vault.store, batch_size=5)
    assert report.resumed and report.processed == 7
    vault.store.data_keys.cache.clear()
    with vault.sessions() as session:
        assert set(session.scalars(select(Resident.key_version))) == {2}
        assert set(session.scalars(select(DataKeyRecord.version))) == {2}
        assert set(session.scalars(select(ResidentRecord.key_version))) == {2}
        assert not old_ciphertexts & _documents(session)
        assert vault.store.read_many(session, list(before)) == before
    # A new rotation starts afresh and touches everyone again.
    again = rotate_data_keys(vault.sessions, vault.store)
    assert not again.resumed and again.processed == 12
